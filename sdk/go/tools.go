package botframework

import (
	"encoding/json"
	"fmt"
)

// Tool is a function the model may call (ChatOptions.Tools).
type Tool struct {
	Name        string // the function's name: letters, digits, _ and -
	Description string // what it does and when to call it
	// Parameters is the JSON schema of the arguments object: a *Schema (see SchemaOf),
	// map[string]any or json.RawMessage. nil means no arguments.
	Parameters any
}

// NewTool is a Tool whose parameters' schema is generated from args' type (SchemaOf), e.g.
// NewTool("get_weather", "The weather in a city", WeatherArgs{}).
func NewTool(name, description string, args any) (Tool, error) {
	schema, err := SchemaOf(args)
	if err != nil {
		return Tool{}, err
	}
	return Tool{Name: name, Description: description, Parameters: schema}, nil
}

// MarshalJSON writes OpenAI's {"type": "function", "function": {...}}.
func (t Tool) MarshalJSON() ([]byte, error) {
	params := t.Parameters
	if params == nil {
		params = map[string]any{"type": "object", "properties": map[string]any{}}
	}
	type function struct {
		Name        string `json:"name"`
		Description string `json:"description,omitempty"`
		Parameters  any    `json:"parameters"`
	}
	return json.Marshal(struct {
		Type     string   `json:"type"`
		Function function `json:"function"`
	}{"function", function{t.Name, t.Description, params}})
}

// ToolChoice says whether and which tool the model must call: ToolChoiceAuto,
// ToolChoiceNone, ToolChoiceRequired, or any other value: the name of the tool it must call.
type ToolChoice string

// The tool choices that are not a tool's name.
const (
	ToolChoiceAuto     ToolChoice = "auto"     // the model decides
	ToolChoiceNone     ToolChoice = "none"     // no tool calls
	ToolChoiceRequired ToolChoice = "required" // at least one call, of any tool
)

func (tc ToolChoice) value() any {
	switch tc {
	case ToolChoiceAuto, ToolChoiceNone, ToolChoiceRequired:
		return string(tc)
	}
	return map[string]any{"type": "function", "function": map[string]string{"name": string(tc)}}
}

// ToolCall is a call the model made: which tool, with which arguments.
type ToolCall struct {
	ID        string // answer it with ToolMessage(call.ID, result)
	Name      string // the tool's name
	Arguments string // the arguments object as JSON text
}

// Decode unmarshals the call's arguments into v.
func (tc ToolCall) Decode(v any) error {
	args := tc.Arguments
	if args == "" {
		args = "{}"
	}
	if err := json.Unmarshal([]byte(args), v); err != nil {
		return fmt.Errorf("botframework: the arguments of tool call %s (%s): %w", tc.ID, tc.Name, err)
	}
	return nil
}

type toolCallJSON struct {
	ID       string `json:"id,omitempty"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// MarshalJSON writes OpenAI's {"id", "type": "function", "function": {"name", "arguments"}}.
func (tc ToolCall) MarshalJSON() ([]byte, error) {
	var j toolCallJSON
	j.ID, j.Type = tc.ID, "function"
	j.Function.Name, j.Function.Arguments = tc.Name, tc.Arguments
	return json.Marshal(j)
}

// UnmarshalJSON reads OpenAI's tool call shape.
func (tc *ToolCall) UnmarshalJSON(data []byte) error {
	var j toolCallJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	*tc = ToolCall{ID: j.ID, Name: j.Function.Name, Arguments: j.Function.Arguments}
	return nil
}
