package botframework

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Schema is a JSON schema, as SchemaOf generates it from a Go type. It marshals to JSON
// with the properties in the order of the struct's fields (a model writes them in that
// order: put a "reasoning" field before an "answer" one).
type Schema struct {
	Ref                  string             // "$ref": "#/$defs/Name" for a recursive type
	Type                 string             // "object", "array", "string", "integer", "number", "boolean"; "" any
	Description          string             // from a field's `description:"..."` tag
	Format               string             // "date-time" for time.Time
	Enum                 []any              // from a field's `enum:"a,b,c"` tag
	Properties           []Property         // an object's properties, in order
	Required             []string           // the properties without omitempty / omitzero
	AdditionalProperties any                // false (a struct), or a *Schema for a map's values; nil: unset
	Items                *Schema            // an array's items
	MinItems             *int               // an array's least length (a Go array's length)
	MaxItems             *int               // an array's greatest length (a Go array's length)
	Minimum              *float64           // an integer's least value (from its Go type's range)
	Maximum              *float64           // an integer's greatest value (from its Go type's range)
	Defs                 map[string]*Schema // "$defs" of the root: recursive types
}

// Property is one of an object schema's properties.
type Property struct {
	Name   string  // the JSON key
	Schema *Schema // its value's schema
}

// SchemaProvider lets a type give its own schema to SchemaOf (for types with a custom
// MarshalJSON, or to add constraints).
type SchemaProvider interface {
	JSONSchema() *Schema
}

// MarshalJSON writes the schema as JSON, keys in a fixed order, properties in their order.
func (s *Schema) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	n := 0
	field := func(name string, v any) error {
		if n > 0 {
			b.WriteByte(',')
		}
		n++
		key, _ := json.Marshal(name)
		b.Write(key)
		b.WriteByte(':')
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		b.Write(data)
		return nil
	}
	var err error
	add := func(name string, v any) {
		if err == nil {
			err = field(name, v)
		}
	}
	if s.Ref != "" {
		add("$ref", s.Ref)
	}
	if s.Type != "" {
		add("type", s.Type)
	}
	if s.Description != "" {
		add("description", s.Description)
	}
	if s.Format != "" {
		add("format", s.Format)
	}
	if s.Enum != nil {
		add("enum", s.Enum)
	}
	if s.Properties != nil || s.Type == "object" && s.AdditionalProperties == false {
		add("properties", orderedProperties(s.Properties))
	}
	if len(s.Required) > 0 {
		add("required", s.Required)
	}
	if s.AdditionalProperties != nil {
		add("additionalProperties", s.AdditionalProperties)
	}
	if s.Items != nil {
		add("items", s.Items)
	}
	if s.MinItems != nil {
		add("minItems", *s.MinItems)
	}
	if s.MaxItems != nil {
		add("maxItems", *s.MaxItems)
	}
	if s.Minimum != nil {
		add("minimum", *s.Minimum)
	}
	if s.Maximum != nil {
		add("maximum", *s.Maximum)
	}
	if len(s.Defs) > 0 {
		add("$defs", s.Defs) // encoding/json sorts the names
	}
	if err != nil {
		return nil, err
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

type orderedProperties []Property

// MarshalJSON writes the properties as one object, in their order.
func (ps orderedProperties) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		key, _ := json.Marshal(p.Name)
		b.Write(key)
		b.WriteByte(':')
		schema := p.Schema
		if schema == nil {
			schema = &Schema{}
		}
		data, err := json.Marshal(schema)
		if err != nil {
			return nil, err
		}
		b.Write(data)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// SchemaOf generates the JSON schema of v's type (v may be a value, a pointer, or a
// reflect.Type), following encoding/json's rules, so that a JSON value valid for the
// schema unmarshals into the type:
//
//   - structs are objects with additionalProperties false; a field's name is its json
//     tag's; fields tagged "-" and unexported ones are left out; embedded structs' fields
//     are promoted; fields with omitempty or omitzero are optional, the others required;
//     a `description:"..."` tag describes a field and an `enum:"a,b,c"` tag lists its
//     allowed values; the ",string" option makes a number or bool a string
//   - slices are arrays (a Go array also fixes the length); []byte is a (base64) string
//   - maps with string, integer or encoding.TextMarshaler keys are objects whose values
//     follow the element's schema
//   - pointers are their element's schema (a nil pointer is left out only with omitempty)
//   - string, bool, integers and floats are the JSON types; integers of 32 bits or less are
//     bounded by their type's range (uint8: 0 to 255), unsigned ones are non-negative;
//     time.Time is a date-time string; encoding.TextMarshaler types are strings;
//     interface types and json.RawMessage are any JSON value; json.Number is a number
//   - types that implement SchemaProvider give their own schema
//   - recursive types are defined once in "$defs" and referenced with "$ref"
//
// Channels, functions, complex numbers and types with a custom MarshalJSON (without
// SchemaProvider) are an error.
func SchemaOf(v any) (*Schema, error) {
	t, ok := v.(reflect.Type)
	if !ok {
		t = reflect.TypeOf(v)
	}
	if t == nil {
		return nil, errors.New("botframework: SchemaOf(nil)")
	}
	return schemaOfType(t)
}

// MustSchemaOf is SchemaOf for types known to work; it panics on an error.
func MustSchemaOf(v any) *Schema {
	s, err := SchemaOf(v)
	if err != nil {
		panic(err)
	}
	return s
}

var (
	timeType          = reflect.TypeOf(time.Time{})
	rawMessageType    = reflect.TypeOf(json.RawMessage(nil))
	numberType        = reflect.TypeOf(json.Number(""))
	providerType      = reflect.TypeOf((*SchemaProvider)(nil)).Elem()
	jsonMarshalerType = reflect.TypeOf((*json.Marshaler)(nil)).Elem()
	textMarshalerType = reflect.TypeOf((*encoding.TextMarshaler)(nil)).Elem()
)

func schemaOfType(t reflect.Type) (*Schema, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	g := &schemaGen{recursive: map[reflect.Type]bool{}, defNames: map[reflect.Type]string{},
		defs: map[string]*Schema{}, taken: map[string]bool{}}
	if err := g.findRecursive(t, map[reflect.Type]bool{}, map[reflect.Type]bool{}); err != nil {
		return nil, err
	}
	root, err := g.schema(t, "")
	if err != nil {
		return nil, err
	}
	if len(g.defs) > 0 {
		if root.Ref != "" { // the root is recursive itself: keep $defs beside its $ref
			root = &Schema{Ref: root.Ref}
		}
		root.Defs = g.defs
	}
	return root, nil
}

type schemaGen struct {
	recursive map[reflect.Type]bool   // struct types reachable from themselves
	defNames  map[reflect.Type]string // their names in $defs
	defs      map[string]*Schema
	taken     map[string]bool
}

// findRecursive marks the struct types that contain themselves (through fields, slices,
// maps, pointers).
func (g *schemaGen) findRecursive(t reflect.Type, onPath, done map[reflect.Type]bool) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array, reflect.Map:
		return g.findRecursive(t.Elem(), onPath, done)
	case reflect.Struct:
		if custom(t) {
			return nil
		}
		if onPath[t] {
			g.recursive[t] = true
			return nil
		}
		if done[t] {
			return nil
		}
		onPath[t] = true
		fields, err := structFields(t)
		if err != nil {
			return err
		}
		for _, f := range fields {
			if err := g.findRecursive(f.typ, onPath, done); err != nil {
				return err
			}
		}
		delete(onPath, t)
		done[t] = true
	}
	return nil
}

// custom reports whether t's schema does not come from its fields.
func custom(t reflect.Type) bool {
	if t == timeType || t == rawMessageType || t == numberType {
		return true
	}
	pt := reflect.PointerTo(t)
	return t.Implements(providerType) || pt.Implements(providerType) || t.Implements(jsonMarshalerType) ||
		pt.Implements(jsonMarshalerType) || t.Implements(textMarshalerType) || pt.Implements(textMarshalerType)
}

func (g *schemaGen) schema(t reflect.Type, path string) (*Schema, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	where := func() string {
		if path == "" {
			return t.String()
		}
		return path + " (" + t.String() + ")"
	}
	pt := reflect.PointerTo(t)
	switch {
	case t.Implements(providerType):
		return reflect.Zero(t).Interface().(SchemaProvider).JSONSchema(), nil
	case pt.Implements(providerType):
		return reflect.New(t).Interface().(SchemaProvider).JSONSchema(), nil
	case t == timeType:
		return &Schema{Type: "string", Format: "date-time"}, nil
	case t == rawMessageType:
		return &Schema{}, nil
	case t == numberType:
		return &Schema{Type: "number"}, nil
	case t.Implements(jsonMarshalerType) || pt.Implements(jsonMarshalerType):
		return nil, fmt.Errorf("botframework: schema of %s: it has a custom MarshalJSON; implement "+
			"SchemaProvider (JSONSchema() *Schema) to give its schema", where())
	case t.Implements(textMarshalerType) || pt.Implements(textMarshalerType):
		return &Schema{Type: "string"}, nil
	}
	switch t.Kind() {
	case reflect.Bool:
		return &Schema{Type: "boolean"}, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return intSchema(t), nil
	case reflect.Float32, reflect.Float64:
		return &Schema{Type: "number"}, nil
	case reflect.String:
		return &Schema{Type: "string"}, nil
	case reflect.Interface:
		return &Schema{}, nil
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 && !custom(t.Elem()) {
			return &Schema{Type: "string", Description: "base64"}, nil
		}
		items, err := g.schema(t.Elem(), path+"[]")
		if err != nil {
			return nil, err
		}
		return &Schema{Type: "array", Items: items}, nil
	case reflect.Array:
		items, err := g.schema(t.Elem(), path+"[]")
		if err != nil {
			return nil, err
		}
		n := t.Len()
		return &Schema{Type: "array", Items: items, MinItems: &n, MaxItems: Ptr(n)}, nil
	case reflect.Map:
		switch k := t.Key(); {
		case k.Kind() == reflect.String, k.Implements(textMarshalerType),
			k.Kind() >= reflect.Int && k.Kind() <= reflect.Uintptr:
		default:
			return nil, fmt.Errorf("botframework: schema of %s: map keys must be strings, integers or "+
				"encoding.TextMarshaler", where())
		}
		values, err := g.schema(t.Elem(), path+"{}")
		if err != nil {
			return nil, err
		}
		return &Schema{Type: "object", AdditionalProperties: values}, nil
	case reflect.Struct:
		if g.recursive[t] {
			return g.ref(t)
		}
		return g.object(t, path)
	}
	return nil, fmt.Errorf("botframework: schema of %s: a %s has no JSON schema", where(), t.Kind())
}

// intSchema bounds integers of 32 bits or less by their type's range (uint8: 0 to 255),
// so that every value the schema allows fits; 64-bit ones would need 19 digits to
// overflow, and are only kept non-negative when unsigned (their bounds are not float64s,
// and would crowd tool definitions the model reads).
func intSchema(t reflect.Type) *Schema {
	s := &Schema{Type: "integer"}
	signed := t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64
	if !signed {
		s.Minimum = Ptr(0.0)
	}
	if bits := t.Bits(); bits <= 32 {
		if signed {
			s.Minimum, s.Maximum = Ptr(-math.Ldexp(1, bits-1)), Ptr(math.Ldexp(1, bits-1)-1)
		} else {
			s.Maximum = Ptr(math.Ldexp(1, bits) - 1)
		}
	}
	return s
}

// ref defines a recursive struct type in $defs (once) and refers to it.
func (g *schemaGen) ref(t reflect.Type) (*Schema, error) {
	name, ok := g.defNames[t]
	if !ok {
		name = schemaName(t)
		for i := 2; g.taken[name]; i++ {
			name = schemaName(t) + strconv.Itoa(i)
		}
		g.taken[name] = true
		g.defNames[t] = name
		g.defs[name] = &Schema{} // placeholder while its fields refer back to it
		s, err := g.object(t, name)
		if err != nil {
			return nil, err
		}
		g.defs[name] = s
	}
	return &Schema{Ref: "#/$defs/" + name}, nil
}

func (g *schemaGen) object(t reflect.Type, path string) (*Schema, error) {
	fields, err := structFields(t)
	if err != nil {
		return nil, err
	}
	s := &Schema{Type: "object", Properties: []Property{}, AdditionalProperties: false}
	for _, f := range fields {
		fpath := f.name
		if path != "" {
			fpath = path + "." + f.name
		}
		fs, err := g.schema(f.typ, fpath)
		if err != nil {
			return nil, err
		}
		if f.asString {
			switch fs.Type {
			case "integer", "number", "boolean":
				fs = &Schema{Type: "string"}
			}
		}
		if f.description != "" || f.enum != nil {
			c := *fs // the field's own copy: a shared $ref or provider schema stays as it is
			fs = &c
			if f.description != "" {
				fs.Description = f.description
			}
			if f.enum != nil {
				fs.Enum, err = enumValues(f.enum, fs.Type, fpath)
				if err != nil {
					return nil, err
				}
				fs.Minimum, fs.Maximum = nil, nil // the values say it all (and bounds beside enum are refused)
			}
			if fs.Ref != "" { // keywords beside $ref are not enforced: keep the $ref alone
				fs = &Schema{Ref: fs.Ref}
			}
		}
		s.Properties = append(s.Properties, Property{Name: f.name, Schema: fs})
		if !f.optional {
			s.Required = append(s.Required, f.name)
		}
	}
	return s, nil
}

func enumValues(values []string, typ, path string) ([]any, error) {
	out := make([]any, 0, len(values))
	for _, v := range values {
		switch typ {
		case "integer":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("botframework: schema of %s: enum value %q is not an integer", path, v)
			}
			out = append(out, n)
		case "number":
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("botframework: schema of %s: enum value %q is not a number", path, v)
			}
			out = append(out, f)
		case "boolean":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("botframework: schema of %s: enum value %q is not a boolean", path, v)
			}
			out = append(out, b)
		default:
			out = append(out, v)
		}
	}
	return out, nil
}

// field is a struct field as encoding/json sees it.
type field struct {
	name        string
	typ         reflect.Type
	optional    bool
	asString    bool
	description string
	enum        []string
	tagged      bool
	index       []int
}

var fieldCache sync.Map // reflect.Type -> []field

// structFields lists t's JSON fields with encoding/json's rules: embedded structs' fields
// promoted, a shallower field hiding deeper ones of the same name, a tagged one winning at
// the same depth, and ambiguous names left out.
func structFields(t reflect.Type) ([]field, error) {
	if cached, ok := fieldCache.Load(t); ok {
		return cached.([]field), nil
	}
	type queued struct {
		typ   reflect.Type
		index []int
	}
	var all []field
	current := []queued{}
	next := []queued{{typ: t}}
	visited := map[reflect.Type]bool{}
	for len(next) > 0 {
		current, next = next, current[:0]
		count := map[string]int{}
		var level []field
		for _, q := range current {
			if visited[q.typ] {
				continue
			}
			visited[q.typ] = true
			for i := 0; i < q.typ.NumField(); i++ {
				sf := q.typ.Field(i)
				tag := sf.Tag.Get("json")
				if tag == "-" {
					continue
				}
				ft := sf.Type
				if sf.Anonymous {
					if ft.Kind() == reflect.Pointer {
						ft = ft.Elem()
					}
					if !sf.IsExported() && ft.Kind() != reflect.Struct {
						continue
					}
				} else if !sf.IsExported() {
					continue
				}
				name, opts, _ := strings.Cut(tag, ",")
				if !validTagName(name) {
					name = ""
				}
				index := append(append([]int(nil), q.index...), i)
				if sf.Anonymous && name == "" && ft.Kind() == reflect.Struct && !custom(ft) {
					next = append(next, queued{typ: ft, index: index})
					continue
				}
				f := field{name: name, typ: sf.Type, tagged: name != "", index: index}
				if f.name == "" {
					f.name = sf.Name
				}
				for _, o := range strings.Split(opts, ",") {
					switch o {
					case "omitempty", "omitzero":
						f.optional = true
					case "string":
						f.asString = true
					}
				}
				f.description = sf.Tag.Get("description")
				if e, ok := sf.Tag.Lookup("enum"); ok {
					for _, v := range strings.Split(e, ",") {
						if v = strings.TrimSpace(v); v != "" {
							f.enum = append(f.enum, v)
						}
					}
				}
				level = append(level, f)
				count[f.name]++
			}
		}
		// at one depth: a name given twice is kept if exactly one of them is tagged
		for _, f := range level {
			if count[f.name] > 1 {
				tagged := 0
				for _, o := range level {
					if o.name == f.name && o.tagged {
						tagged++
					}
				}
				if !(tagged == 1 && f.tagged) {
					continue
				}
			}
			if !hasField(all, f.name) { // a shallower field of the same name hides it
				all = append(all, f)
			}
		}
		// names seen at this depth hide deeper ones, even when dropped as ambiguous
		for name := range count {
			if !hasField(all, name) {
				all = append(all, field{name: name, index: nil})
			}
		}
	}
	out := all[:0]
	for _, f := range all {
		if f.index != nil {
			out = append(out, f)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return lessIndex(out[i].index, out[j].index) })
	fieldCache.Store(t, out)
	return out, nil
}

func hasField(fields []field, name string) bool {
	for _, f := range fields {
		if f.name == name {
			return true
		}
	}
	return false
}

func lessIndex(a, b []int) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return len(a) < len(b)
}

func validTagName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		switch {
		case strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~ ", c):
		case !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c > 127):
			return false
		}
	}
	return true
}

// schemaName is a name for t in a response format or $defs: letters, digits, _ and -.
func schemaName(t reflect.Type) string {
	name := t.Name()
	if i := strings.IndexByte(name, '['); i >= 0 { // a generic type's arguments
		name = name[:i]
	}
	var b strings.Builder
	for _, c := range name {
		if c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '-' {
			b.WriteRune(c)
		}
	}
	if b.Len() == 0 {
		return "response"
	}
	if b.Len() > 64 {
		return b.String()[:64]
	}
	return b.String()
}
