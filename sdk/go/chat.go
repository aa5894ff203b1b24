package botframework

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
)

// Message roles.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleTool      = "tool"
)

// Message is one turn of a conversation.
type Message struct {
	Role       string     `json:"role"`                        // RoleSystem, RoleUser, RoleAssistant or RoleTool
	Content    string     `json:"content"`                     // the text
	Name       string     `json:"name,omitempty"`              // an optional participant name
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`        // an assistant turn's tool calls
	ToolCallID string     `json:"tool_call_id,omitempty"`      // a tool turn: the call it answers
	Reasoning  string     `json:"reasoning_content,omitempty"` // an assistant turn's reasoning, if kept
}

// SystemMessage is a system turn: instructions for the model.
func SystemMessage(text string) Message { return Message{Role: RoleSystem, Content: text} }

// UserMessage is a user turn.
func UserMessage(text string) Message { return Message{Role: RoleUser, Content: text} }

// AssistantMessage is an assistant turn (a previous answer).
func AssistantMessage(text string) Message { return Message{Role: RoleAssistant, Content: text} }

// ToolMessage is a tool's result for the call with id callID (ToolCall.ID).
func ToolMessage(callID, content string) Message {
	return Message{Role: RoleTool, Content: content, ToolCallID: callID}
}

// ChatOptions tunes one request. A nil *ChatOptions means the server's defaults. Pointer
// fields are sent only when set (see Ptr), so that 0 can be asked for.
type ChatOptions struct {
	// Model names another model the server serves for this request; "" is the client's.
	Model string
	// System, if not "", is sent as a system message before the messages.
	System string
	// MaxTokens caps the answer's length in tokens; 0 lets the server decide (what fits).
	MaxTokens int

	Temperature      *float64 // 0..2; 0 picks the most likely token
	TopP             *float64 // nucleus sampling, 0..1
	TopK             *int     // sample among the k most likely tokens (extension)
	MinP             *float64 // drop tokens less likely than min_p times the best (extension)
	RepeatPenalty    *float64 // > 1 discourages repeating recent tokens (extension)
	PresencePenalty  *float64 // -2..2
	FrequencyPenalty *float64 // -2..2
	Seed             *int64   // makes sampling reproducible
	Stop             []string // stop before any of these strings
	IgnoreEOS        bool     // keep generating past end-of-text tokens (benchmarks)
	// Speculative asks for n-gram drafts (speculative decoding) for this request, or none;
	// nil: the server's --draft. Usage's AcceptedPredictionTokens says how it went.
	Speculative *bool

	// Tools the model may call (chat only); their calls come back in Result.ToolCalls.
	Tools []Tool
	// ToolChoice: ToolChoiceAuto (default with tools), ToolChoiceNone, ToolChoiceRequired,
	// or a tool's name to force that tool.
	ToolChoice ToolChoice
	// ParallelToolCalls allows more than one call per answer (the server's default: no).
	ParallelToolCalls *bool
	// ResponseFormat constrains the answer (chat only): JSON or a JSON schema (see
	// JSONSchemaFormat; ChatInto sets it for you).
	ResponseFormat *ResponseFormat

	// SessionID keeps the conversation's KV cache on the server between turns (Session
	// sets it).
	SessionID string
	// Extra fields merged into the request body as they are, for server options this
	// struct does not name (e.g. "overflow": "truncate", "logit_bias").
	Extra map[string]any
}

// Ptr returns a pointer to v, for ChatOptions' optional fields:
// &ChatOptions{Temperature: botframework.Ptr(0.0)}.
func Ptr[T any](v T) *T { return &v }

// ResponseFormat is OpenAI's response_format: {"type": "text" | "json_object" |
// "json_schema", "json_schema": {...}}.
type ResponseFormat struct {
	Type       string            `json:"type"`                  // "text", "json_object" or "json_schema"
	JSONSchema *JSONSchemaFormat `json:"json_schema,omitempty"` // the schema, for "json_schema"
}

// JSONSchemaFormat is response_format's json_schema: the server's grammar makes the answer
// valid JSON for Schema.
type JSONSchemaFormat struct {
	Name        string `json:"name"`                  // letters, digits, _ and -
	Description string `json:"description,omitempty"` // what the answer is
	Schema      any    `json:"schema"`                // a *Schema, map[string]any or json.RawMessage
	Strict      bool   `json:"strict"`                // always enforced here; sent for OpenAI's shape
}

// JSONSchemaFor is the response format for answers that decode into v's type (see
// SchemaOf), named after the type.
func JSONSchemaFor(v any) (*ResponseFormat, error) {
	t := reflect.TypeOf(v)
	if t == nil {
		return nil, errors.New("botframework: JSONSchemaFor(nil)")
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	schema, err := schemaOfType(t)
	if err != nil {
		return nil, err
	}
	return &ResponseFormat{Type: "json_schema",
		JSONSchema: &JSONSchemaFormat{Name: schemaName(t), Schema: schema, Strict: true}}, nil
}

// Usage counts a request's tokens.
type Usage struct {
	PromptTokens     int // tokens of the prompt (the whole conversation)
	CompletionTokens int // tokens generated
	TotalTokens      int // both
	CachedTokens     int // prompt tokens the server did not compute again (prefix or session cache)
	// Speculative decoding, for a request that drafted: draft tokens the model kept (they cost
	// no decode step of their own) and draft tokens it rejected.
	AcceptedPredictionTokens int
	RejectedPredictionTokens int
}

// Result is a whole answer.
type Result struct {
	ID           string     // the response id (what Cancel takes)
	Model        string     // the model that answered
	Text         string     // the answer's text ("" when it is only tool calls)
	Reasoning    string     // reasoning_content, for models that think before answering
	FinishReason string     // "stop", "length" (max_tokens reached) or "tool_calls"
	ToolCalls    []ToolCall // the tools the model called, if any
	Usage        Usage      // the tokens it took
}

// Message is the assistant turn that r is, to append to a conversation's history.
func (r *Result) Message() Message {
	return Message{Role: RoleAssistant, Content: r.Text, ToolCalls: r.ToolCalls}
}

type usageJSON struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails *struct {
		AcceptedPredictionTokens int `json:"accepted_prediction_tokens"`
		RejectedPredictionTokens int `json:"rejected_prediction_tokens"`
	} `json:"completion_tokens_details"`
}

func (u *usageJSON) usage() Usage {
	if u == nil {
		return Usage{}
	}
	out := Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.TotalTokens}
	if u.PromptTokensDetails != nil {
		out.CachedTokens = u.PromptTokensDetails.CachedTokens
	}
	if d := u.CompletionTokensDetails; d != nil {
		out.AcceptedPredictionTokens, out.RejectedPredictionTokens = d.AcceptedPredictionTokens, d.RejectedPredictionTokens
	}
	return out
}

// sampling are the fields chat and completions share.
type sampling struct {
	MaxTokens        int      `json:"max_tokens,omitempty"`
	Temperature      *float64 `json:"temperature,omitempty"`
	TopP             *float64 `json:"top_p,omitempty"`
	TopK             *int     `json:"top_k,omitempty"`
	MinP             *float64 `json:"min_p,omitempty"`
	RepeatPenalty    *float64 `json:"repeat_penalty,omitempty"`
	PresencePenalty  *float64 `json:"presence_penalty,omitempty"`
	FrequencyPenalty *float64 `json:"frequency_penalty,omitempty"`
	Seed             *int64   `json:"seed,omitempty"`
	Stop             []string `json:"stop,omitempty"`
	IgnoreEOS        bool     `json:"ignore_eos,omitempty"`
	SessionID        string   `json:"session_id,omitempty"`
	Speculative      *bool    `json:"speculative,omitempty"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatRequest struct {
	Model         string         `json:"model"`
	Messages      []Message      `json:"messages"`
	Stream        bool           `json:"stream,omitempty"`
	StreamOptions *streamOptions `json:"stream_options,omitempty"`
	sampling
	Tools             []Tool          `json:"tools,omitempty"`
	ToolChoice        any             `json:"tool_choice,omitempty"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls,omitempty"`
	ResponseFormat    *ResponseFormat `json:"response_format,omitempty"`
}

type completionRequest struct {
	Model         string         `json:"model"`
	Prompt        string         `json:"prompt"`
	Stream        bool           `json:"stream,omitempty"`
	StreamOptions *streamOptions `json:"stream_options,omitempty"`
	sampling
}

func (o *ChatOptions) sampling() sampling {
	return sampling{MaxTokens: o.MaxTokens, Temperature: o.Temperature, TopP: o.TopP, TopK: o.TopK, MinP: o.MinP,
		RepeatPenalty: o.RepeatPenalty, PresencePenalty: o.PresencePenalty, FrequencyPenalty: o.FrequencyPenalty,
		Seed: o.Seed, Stop: o.Stop, IgnoreEOS: o.IgnoreEOS, SessionID: o.SessionID, Speculative: o.Speculative}
}

func (c *Client) modelFor(opts *ChatOptions) string {
	if opts.Model != "" {
		return opts.Model
	}
	return c.model
}

// chatBody is the JSON body of a chat request.
func (c *Client) chatBody(msgs []Message, opts *ChatOptions, stream bool) (json.RawMessage, error) {
	if opts == nil {
		opts = &ChatOptions{}
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf("%w: a chat needs at least one message", ErrBadRequest)
	}
	all := msgs
	if opts.System != "" {
		all = append([]Message{SystemMessage(opts.System)}, msgs...)
	}
	req := chatRequest{Model: c.modelFor(opts), Messages: all, Stream: stream, sampling: opts.sampling(),
		Tools: opts.Tools, ParallelToolCalls: opts.ParallelToolCalls, ResponseFormat: opts.ResponseFormat}
	if stream {
		req.StreamOptions = &streamOptions{IncludeUsage: true}
	}
	if opts.ToolChoice != "" {
		req.ToolChoice = opts.ToolChoice.value()
	}
	return withExtra(req, opts.Extra)
}

func (c *Client) completionBody(prompt string, opts *ChatOptions, stream bool) (json.RawMessage, error) {
	if opts == nil {
		opts = &ChatOptions{}
	}
	if opts.System != "" || len(opts.Tools) > 0 || opts.ToolChoice != "" || opts.ParallelToolCalls != nil ||
		opts.ResponseFormat != nil {
		return nil, fmt.Errorf("%w: System, Tools, ToolChoice, ParallelToolCalls and ResponseFormat are for chat, "+
			"not completions", ErrBadRequest)
	}
	req := completionRequest{Model: c.modelFor(opts), Prompt: prompt, Stream: stream, sampling: opts.sampling()}
	if stream {
		req.StreamOptions = &streamOptions{IncludeUsage: true}
	}
	return withExtra(req, opts.Extra)
}

// withExtra marshals req with extra's fields added (replacing req's of the same name).
func withExtra(req any, extra map[string]any) (json.RawMessage, error) {
	body, err := json.Marshal(req)
	if err != nil || len(extra) == 0 {
		if err != nil {
			err = fmt.Errorf("botframework: encoding the request: %w", err)
		}
		return body, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, err
	}
	for k, v := range extra {
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("botframework: encoding Extra[%q]: %w", k, err)
		}
		fields[k] = raw
	}
	return json.Marshal(fields)
}

type chatResponse struct {
	ID      string `json:"id"`
	Model   string `json:"model"`
	Choices []struct {
		Message struct {
			Content          *string    `json:"content"`
			ReasoningContent string     `json:"reasoning_content"`
			ToolCalls        []ToolCall `json:"tool_calls"`
		} `json:"message"`
		Text         string `json:"text"` // completions
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usageJSON `json:"usage"`
}

func (r *chatResponse) result() (*Result, error) {
	if len(r.Choices) == 0 {
		return nil, errors.New("botframework: the server answered no choices")
	}
	ch := r.Choices[0]
	res := &Result{ID: r.ID, Model: r.Model, FinishReason: ch.FinishReason, Reasoning: ch.Message.ReasoningContent,
		ToolCalls: ch.Message.ToolCalls, Usage: r.Usage.usage(), Text: ch.Text}
	if ch.Message.Content != nil {
		res.Text = *ch.Message.Content
	}
	return res, nil
}

// Chat sends prompt as a user message and returns the whole answer. opts may be nil.
func (c *Client) Chat(prompt string, opts *ChatOptions) (*Result, error) {
	return c.ChatMessagesContext(context.Background(), []Message{UserMessage(prompt)}, opts)
}

// ChatContext is Chat with a context: cancelling it stops the generation on the server.
func (c *Client) ChatContext(ctx context.Context, prompt string, opts *ChatOptions) (*Result, error) {
	return c.ChatMessagesContext(ctx, []Message{UserMessage(prompt)}, opts)
}

// ChatMessages answers a conversation (POST /v1/chat/completions).
func (c *Client) ChatMessages(msgs []Message, opts *ChatOptions) (*Result, error) {
	return c.ChatMessagesContext(context.Background(), msgs, opts)
}

// ChatMessagesContext is ChatMessages with a context: cancelling it stops the generation
// on the server.
func (c *Client) ChatMessagesContext(ctx context.Context, msgs []Message, opts *ChatOptions) (*Result, error) {
	body, err := c.chatBody(msgs, opts, false)
	if err != nil {
		return nil, err
	}
	var resp chatResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/chat/completions", body, &resp); err != nil {
		return nil, err
	}
	return resp.result()
}

// ChatInto asks for an answer in the shape of v's type and decodes it into v, which must be
// a non-nil pointer. The JSON schema is generated from the type (SchemaOf) and sent as
// response_format json_schema with strict true; the server's grammar makes the answer
// valid for it. An answer cut off by MaxTokens is an ErrTruncated error.
func (c *Client) ChatInto(prompt string, v any, opts *ChatOptions) (*Result, error) {
	return c.ChatMessagesIntoContext(context.Background(), []Message{UserMessage(prompt)}, v, opts)
}

// ChatIntoContext is ChatInto with a context.
func (c *Client) ChatIntoContext(ctx context.Context, prompt string, v any, opts *ChatOptions) (*Result, error) {
	return c.ChatMessagesIntoContext(ctx, []Message{UserMessage(prompt)}, v, opts)
}

// ChatMessagesInto is ChatInto for a conversation.
func (c *Client) ChatMessagesInto(msgs []Message, v any, opts *ChatOptions) (*Result, error) {
	return c.ChatMessagesIntoContext(context.Background(), msgs, v, opts)
}

// ChatMessagesIntoContext is ChatMessagesInto with a context.
func (c *Client) ChatMessagesIntoContext(ctx context.Context, msgs []Message, v any, opts *ChatOptions) (*Result, error) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return nil, fmt.Errorf("botframework: ChatInto needs a non-nil pointer, not %T", v)
	}
	o := ChatOptions{}
	if opts != nil {
		o = *opts
	}
	if o.ResponseFormat == nil {
		format, err := JSONSchemaFor(v)
		if err != nil {
			return nil, err
		}
		o.ResponseFormat = format
	}
	res, err := c.ChatMessagesContext(ctx, msgs, &o)
	if err != nil {
		return nil, err
	}
	if err := decodeAnswer(res, v); err != nil {
		return res, err
	}
	return res, nil
}

func decodeAnswer(res *Result, v any) error {
	if res.FinishReason == "length" {
		return fmt.Errorf("%w (%d tokens): raise MaxTokens", ErrTruncated, res.Usage.CompletionTokens)
	}
	if err := json.Unmarshal([]byte(res.Text), v); err != nil {
		return fmt.Errorf("botframework: decoding the answer into %T: %w", v, err)
	}
	return nil
}

// Complete continues a raw prompt (POST /v1/completions), without a chat template. The
// chat-only options (System, Tools, ToolChoice, ParallelToolCalls, ResponseFormat) are an
// ErrBadRequest error.
func (c *Client) Complete(prompt string, opts *ChatOptions) (*Result, error) {
	return c.CompleteContext(context.Background(), prompt, opts)
}

// CompleteContext is Complete with a context.
func (c *Client) CompleteContext(ctx context.Context, prompt string, opts *ChatOptions) (*Result, error) {
	body, err := c.completionBody(prompt, opts, false)
	if err != nil {
		return nil, err
	}
	var resp chatResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/completions", body, &resp); err != nil {
		return nil, err
	}
	return resp.result()
}
