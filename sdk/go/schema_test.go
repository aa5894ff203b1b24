package botframework

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

type address struct {
	Street string `json:"street" description:"street and number"`
	City   string `json:"city"`
	Zip    string `json:"zip,omitempty"`
}

type Base struct {
	ID      int    `json:"id"`
	Created string `json:"created,omitempty"`
}

type person struct {
	Base                        // promoted: id, created
	Name     string             `json:"name"`
	Age      uint8              `json:"age"`
	Score    float64            `json:"score"`
	Active   bool               `json:"active"`
	Nick     *string            `json:"nick,omitempty"`
	Email    *string            `json:"email"`
	Tags     []string           `json:"tags"`
	Pair     [2]int             `json:"pair"`
	Home     address            `json:"home"`
	Work     *address           `json:"work,omitempty"`
	Counts   map[string]int     `json:"counts"`
	Extra    map[string]any     `json:"extra,omitempty"`
	Anything any                `json:"anything,omitempty"`
	Raw      json.RawMessage    `json:"raw,omitempty"`
	Born     time.Time          `json:"born"`
	Blob     []byte             `json:"blob,omitempty"`
	Level    string             `json:"level" enum:"low,mid,high"`
	Stars    int                `json:"stars" enum:"1,2,3"`
	Big      int64              `json:"big,string"`
	Ignored  string             `json:"-"`
	Dash     string             `json:"-,"`
	NoTag    string             // named as the field
	hidden   string             // unexported: left out
	Nested   map[int][]*address `json:"nested,omitempty"`
}

func TestSchemaOfStruct(t *testing.T) {
	s, err := SchemaOf(person{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Type != "object" || s.AdditionalProperties != false {
		t.Fatalf("root: type %q additionalProperties %v", s.Type, s.AdditionalProperties)
	}
	var names []string
	props := map[string]*Schema{}
	for _, p := range s.Properties {
		names = append(names, p.Name)
		props[p.Name] = p.Schema
	}
	want := []string{"id", "created", "name", "age", "score", "active", "nick", "email", "tags", "pair", "home", "work",
		"counts", "extra", "anything", "raw", "born", "blob", "level", "stars", "big", "-", "NoTag", "nested"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("properties\n got %v\nwant %v", names, want)
	}
	wantRequired := []string{"id", "name", "age", "score", "active", "email", "tags", "pair", "home", "counts", "born",
		"level", "stars", "big", "-", "NoTag"}
	if !reflect.DeepEqual(s.Required, wantRequired) {
		t.Fatalf("required\n got %v\nwant %v", s.Required, wantRequired)
	}
	checks := map[string]string{
		"id": `{"type":"integer"}`, "name": `{"type":"string"}`, "age": `{"type":"integer","minimum":0,"maximum":255}`,
		"score": `{"type":"number"}`, "active": `{"type":"boolean"}`, "nick": `{"type":"string"}`,
		"tags":     `{"type":"array","items":{"type":"string"}}`,
		"pair":     `{"type":"array","items":{"type":"integer"},"minItems":2,"maxItems":2}`,
		"home":     `{"type":"object","properties":{"street":{"type":"string","description":"street and number"},"city":{"type":"string"},"zip":{"type":"string"}},"required":["street","city"],"additionalProperties":false}`,
		"counts":   `{"type":"object","additionalProperties":{"type":"integer"}}`,
		"extra":    `{"type":"object","additionalProperties":{}}`,
		"anything": `{}`, "raw": `{}`,
		"born":   `{"type":"string","format":"date-time"}`,
		"blob":   `{"type":"string","description":"base64"}`,
		"level":  `{"type":"string","enum":["low","mid","high"]}`,
		"stars":  `{"type":"integer","enum":[1,2,3]}`,
		"big":    `{"type":"string"}`,
		"nested": `{"type":"object","additionalProperties":{"type":"array","items":{"type":"object","properties":{"street":{"type":"string","description":"street and number"},"city":{"type":"string"},"zip":{"type":"string"}},"required":["street","city"],"additionalProperties":false}}}`,
	}
	for name, want := range checks {
		got, err := json.Marshal(props[name])
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
	}
	if props["work"] == nil || props["work"].Type != "object" {
		t.Errorf("a pointer to a struct is the struct's schema: %+v", props["work"])
	}
}

func TestSchemaOfPointerAndType(t *testing.T) {
	a, _ := json.Marshal(MustSchemaOf(&address{}))
	b, _ := json.Marshal(MustSchemaOf(reflect.TypeOf(address{})))
	c, _ := json.Marshal(MustSchemaOf(address{}))
	if string(a) != string(c) || string(b) != string(c) {
		t.Fatalf("a pointer, a reflect.Type and a value give the same schema:\n%s\n%s\n%s", a, b, c)
	}
}

func TestSchemaPropertyOrderIsFieldOrder(t *testing.T) {
	type answer struct {
		Zeta      string `json:"zeta"`
		Reasoning string `json:"reasoning"`
		Answer    string `json:"answer"`
	}
	data, _ := json.Marshal(MustSchemaOf(answer{}))
	z, r, a := strings.Index(string(data), `"zeta"`), strings.Index(string(data), `"reasoning"`),
		strings.Index(string(data), `"answer"`)
	if !(z < r && r < a) {
		t.Fatalf("properties are not in field order: %s", data)
	}
}

type tree struct {
	Value    int     `json:"value"`
	Children []*tree `json:"children"`
}

type forest struct {
	Trees []tree `json:"trees"`
	Name  string `json:"name"`
}

func TestSchemaRecursiveTypes(t *testing.T) {
	data, err := json.Marshal(MustSchemaOf(tree{}))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"$ref":"#/$defs/tree","$defs":{"tree":{"type":"object","properties":{"value":{"type":"integer"},` +
		`"children":{"type":"array","items":{"$ref":"#/$defs/tree"}}},"required":["value","children"],"additionalProperties":false}}}`
	if string(data) != want {
		t.Fatalf("recursive root:\n got %s\nwant %s", data, want)
	}
	data, _ = json.Marshal(MustSchemaOf(forest{}))
	want = `{"type":"object","properties":{"trees":{"type":"array","items":{"$ref":"#/$defs/tree"}},"name":{"type":"string"}},` +
		`"required":["trees","name"],"additionalProperties":false,"$defs":{"tree":`
	if !strings.HasPrefix(string(data), want) {
		t.Fatalf("recursive member:\n got %s\nwant prefix %s", data, want)
	}
	v := forest{Name: "f", Trees: []tree{{Value: 1, Children: []*tree{{Value: 2, Children: []*tree{}}}}}}
	if err := validateValue(t, MustSchemaOf(forest{}), v); err != nil {
		t.Fatal(err)
	}
}

type celsius float64

func (celsius) JSONSchema() *Schema {
	return &Schema{Type: "number", Description: "degrees Celsius"}
}

type level int

func (l level) MarshalText() ([]byte, error) { return []byte(fmt.Sprint(int(l))), nil }

type customJSON struct{}

func (customJSON) MarshalJSON() ([]byte, error) { return []byte(`1`), nil }

func TestSchemaCustomTypes(t *testing.T) {
	type weather struct {
		Temp  celsius `json:"temp"`
		Level level   `json:"level"`
	}
	data, _ := json.Marshal(MustSchemaOf(weather{}))
	want := `{"type":"object","properties":{"temp":{"type":"number","description":"degrees Celsius"},` +
		`"level":{"type":"string"}},"required":["temp","level"],"additionalProperties":false}`
	if string(data) != want {
		t.Fatalf("\n got %s\nwant %s", data, want)
	}
	for _, v := range []any{customJSON{}, struct{ C chan int }{}, struct{ F func() }{}, struct{ X complex128 }{},
		map[bool]int{}, nil} {
		if _, err := SchemaOf(v); err == nil {
			t.Errorf("SchemaOf(%T) should fail", v)
		}
	}
	if _, err := SchemaOf(struct {
		N int `json:"n" enum:"1,x"`
	}{}); err == nil || !strings.Contains(err.Error(), "not an integer") {
		t.Errorf("a bad enum value should fail naming it: %v", err)
	}
}

func TestSchemaEmbeddedConflicts(t *testing.T) {
	type A struct {
		X int
		Y int
	}
	type B struct {
		X int
		W int `json:"Y"`
	}
	type outer struct {
		A
		B
		Z int `json:"z"`
	}
	var names []string
	for _, p := range MustSchemaOf(outer{}).Properties {
		names = append(names, p.Name)
	}
	// X: twice, untagged, at one depth -> dropped (as encoding/json does); Y: B's is tagged -> kept
	if !reflect.DeepEqual(names, []string{"Y", "z"}) {
		t.Fatalf("got %v", names)
	}
	data, _ := json.Marshal(outer{A: A{X: 1, Y: 2}, B: B{X: 3, W: 4}, Z: 5})
	if string(data) != `{"Y":4,"z":5}` {
		t.Fatalf("encoding/json disagrees with the test: %s", data)
	}
}

func TestSchemaOfNonStructRoots(t *testing.T) {
	cases := []struct {
		v    any
		want string
	}{
		{[]string{}, `{"type":"array","items":{"type":"string"}}`},
		{0, `{"type":"integer"}`},
		{int8(0), `{"type":"integer","minimum":-128,"maximum":127}`},
		{int32(0), `{"type":"integer","minimum":-2147483648,"maximum":2147483647}`},
		{uint16(0), `{"type":"integer","minimum":0,"maximum":65535}`},
		{uint32(0), `{"type":"integer","minimum":0,"maximum":4294967295}`},
		{uint64(0), `{"type":"integer","minimum":0}`},
		{struct {
			L uint8 `json:"l" enum:"1,2"`
		}{}, `{"type":"object","properties":{"l":{"type":"integer","enum":[1,2]}},"required":["l"],"additionalProperties":false}`},
		{map[string]bool{}, `{"type":"object","additionalProperties":{"type":"boolean"}}`},
		{struct{}{}, `{"type":"object","properties":{},"additionalProperties":false}`},
		{json.Number("1"), `{"type":"number"}`},
		{time.Time{}, `{"type":"string","format":"date-time"}`},
		{new(*int), `{"type":"integer"}`},
		{[]map[int]string{}, `{"type":"array","items":{"type":"object","additionalProperties":{"type":"string"}}}`},
	}
	for _, c := range cases {
		v, want := c.v, c.want
		data, err := json.Marshal(MustSchemaOf(v))
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != want {
			t.Errorf("%T:\n got %s\nwant %s", v, data, want)
		}
	}
}

func TestJSONSchemaForName(t *testing.T) {
	format, err := JSONSchemaFor(&person{})
	if err != nil {
		t.Fatal(err)
	}
	if format.Type != "json_schema" || format.JSONSchema.Name != "person" || !format.JSONSchema.Strict {
		t.Fatalf("%+v", format.JSONSchema)
	}
	format, _ = JSONSchemaFor(&[]int{})
	if format.JSONSchema.Name != "response" {
		t.Fatalf("an unnamed type is %q", format.JSONSchema.Name)
	}
}

// Values the schema's type marshals to validate against the schema (the property the
// schema exists for), and values that break it do not.
func TestSchemaValidatesItsOwnValues(t *testing.T) {
	nick := "bob"
	v := person{Base: Base{ID: 1}, Name: "Ann", Age: 30, Score: 1.5, Active: true, Nick: &nick, Email: &nick,
		Tags: []string{"a"}, Pair: [2]int{1, 2}, Home: address{Street: "s", City: "c"}, Counts: map[string]int{"x": 1},
		Born: time.Now(), Level: "mid", Stars: 2, Big: 7, NoTag: "n"}
	s := MustSchemaOf(person{})
	if err := validateValue(t, s, v); err != nil {
		t.Fatal(err)
	}
	bad := []string{
		`{"name":"x"}`, // missing required
		strings.Replace(mustJSON(t, v), `"name":"Ann"`, `"name":3`, 1),
		strings.Replace(mustJSON(t, v), `"level":"mid"`, `"level":"max"`, 1),
		strings.Replace(mustJSON(t, v), `"name":"Ann"`, `"name":"Ann","surprise":1`, 1),
		strings.Replace(mustJSON(t, v), `"pair":[1,2]`, `"pair":[1,2,3]`, 1),
		strings.Replace(mustJSON(t, v), `"age":30`, `"age":-1`, 1),
	}
	for _, doc := range bad {
		if err := validateJSON(s, []byte(doc)); err == nil {
			t.Errorf("validated but should not: %s", doc)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func validateValue(t *testing.T, s *Schema, v any) error {
	t.Helper()
	return validateJSON(s, []byte(mustJSON(t, v)))
}

// validateJSON checks a JSON document against a schema SchemaOf made (the keywords it
// uses), for the tests: the server's answers must validate against the struct's schema.
func validateJSON(s *Schema, doc []byte) error {
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		return err
	}
	return validate(s, s, v, "$")
}

func validate(root, s *Schema, v any, path string) error {
	if s.Ref != "" {
		name := strings.TrimPrefix(s.Ref, "#/$defs/")
		def, ok := root.Defs[name]
		if !ok {
			return fmt.Errorf("%s: unresolved %s", path, s.Ref)
		}
		return validate(root, def, v, path)
	}
	if s.Enum != nil {
		found := false
		for _, e := range s.Enum {
			a, _ := json.Marshal(e)
			b, _ := json.Marshal(v)
			if string(a) == string(b) {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%s: %v is not one of %v", path, v, s.Enum)
		}
	}
	switch s.Type {
	case "":
		return nil
	case "string":
		if _, ok := v.(string); !ok {
			return fmt.Errorf("%s: %v is not a string", path, v)
		}
		if s.Format == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, v.(string)); err != nil {
				return fmt.Errorf("%s: %v is not a date-time", path, v)
			}
		}
	case "integer", "number":
		f, ok := v.(float64)
		if !ok {
			return fmt.Errorf("%s: %v is not a number", path, v)
		}
		if s.Type == "integer" && f != math.Trunc(f) {
			return fmt.Errorf("%s: %v is not an integer", path, v)
		}
		if s.Minimum != nil && f < *s.Minimum {
			return fmt.Errorf("%s: %v is below %v", path, v, *s.Minimum)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s: %v is not a boolean", path, v)
		}
	case "array":
		items, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: %v is not an array", path, v)
		}
		if s.MinItems != nil && len(items) < *s.MinItems || s.MaxItems != nil && len(items) > *s.MaxItems {
			return fmt.Errorf("%s: %d items", path, len(items))
		}
		for i, item := range items {
			if err := validate(root, s.Items, item, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: %v is not an object", path, v)
		}
		for _, name := range s.Required {
			if _, ok := obj[name]; !ok {
				return fmt.Errorf("%s: %q is missing", path, name)
			}
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			var sub *Schema
			for _, p := range s.Properties {
				if p.Name == k {
					sub = p.Schema
				}
			}
			if sub == nil {
				switch extra := s.AdditionalProperties.(type) {
				case *Schema:
					sub = extra
				case bool:
					if !extra {
						return fmt.Errorf("%s: unexpected property %q", path, k)
					}
				}
			}
			if sub != nil {
				if err := validate(root, sub, obj[k], path+"."+k); err != nil {
					return err
				}
			}
		}
	default:
		return fmt.Errorf("%s: unknown type %q", path, s.Type)
	}
	return nil
}
