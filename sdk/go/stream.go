package botframework

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Delta is one piece of a streamed answer. Only the fields this piece carries are set.
type Delta struct {
	ID           string          // the response id (the same in every delta)
	Content      string          // more answer text
	Reasoning    string          // more reasoning_content
	ToolCalls    []ToolCallDelta // pieces of tool calls
	FinishReason string          // set in the last delta of the answer: "stop", "length", "tool_calls"
	Usage        *Usage          // set in the final usage delta, after the finish
}

// ToolCallDelta is a piece of a streamed tool call: the first piece of a call has its ID and
// Name, later ones more Arguments text. Index tells the calls of one answer apart.
type ToolCallDelta struct {
	Index     int    // which call of the answer
	ID        string // the call's id (first piece)
	Name      string // the tool's name (first piece)
	Arguments string // more of the arguments' JSON text
}

// Stream is a streamed answer. Read it like a bufio.Scanner:
//
//	stream, err := llm.ChatStream("Tell me a story", nil)
//	if err != nil { ... }
//	defer stream.Close()
//	for stream.Next() {
//		fmt.Print(stream.Delta().Content)
//	}
//	if err := stream.Err(); err != nil { ... }
//
// Cancelling the context it was opened with, or Close, ends it: the HTTP response is
// closed and the server stops generating. A Stream is read by one goroutine; Close and
// ID may be called from any.
type Stream struct {
	body   io.ReadCloser
	reader *bufio.Reader
	ctx    context.Context
	cancel context.CancelFunc
	base   string

	id      atomic.Value // string: the response id, known once the first chunk arrived
	pending []Delta      // parsed but not yet returned by Next
	cur     Delta
	err     error
	done    atomic.Bool // ended: [DONE], an error, or Close

	res   Result
	calls []*ToolCall

	closeOnce sync.Once
	onEnd     func(res *Result, err error) // called once, when the stream ends or is closed
}

// openStream posts body to path and returns the stream after its first event: errors the
// server sends before any output are returned here. The client's timeout bounds the wait
// for that first event.
func (c *Client) openStream(ctx context.Context, path string, body []byte) (*Stream, error) {
	sctx, cancel := context.WithCancel(ctx)
	var timedOut atomic.Bool
	var timer *time.Timer
	if c.timeout > 0 {
		timer = time.AfterFunc(c.timeout, func() { timedOut.Store(true); cancel() })
	}
	fail := func(err error) (*Stream, error) {
		cancel()
		if timedOut.Load() && ctx.Err() == nil {
			return nil, fmt.Errorf("botframework: the stream did not start within %s: %w", c.timeout,
				context.DeadlineExceeded)
		}
		return nil, err
	}
	resp, err := c.send(sctx, http.MethodPost, path, body)
	if err != nil {
		return fail(err)
	}
	s := &Stream{body: resp.Body, reader: bufio.NewReaderSize(resp.Body, 64<<10), ctx: sctx, cancel: cancel,
		base: c.base}
	s.id.Store("")
	if !s.fill() && s.err != nil {
		resp.Body.Close()
		return fail(s.err)
	}
	if timer != nil && !timer.Stop() && timedOut.Load() {
		resp.Body.Close()
		return fail(context.DeadlineExceeded)
	}
	return s, nil
}

// Next advances to the next delta; false when the stream has ended (see Err) or was closed.
func (s *Stream) Next() bool {
	for len(s.pending) == 0 {
		if s.done.Load() || !s.fill() {
			return false
		}
	}
	s.cur = s.pending[0]
	s.pending = s.pending[1:]
	return true
}

// Delta is the delta Next moved to.
func (s *Stream) Delta() Delta { return s.cur }

// Err is why the stream ended: nil after the server's [DONE], an *APIError the server sent
// in the stream, a context error (errors.Is(err, context.Canceled)) if the context ended
// it, or ErrServerUnavailable if the connection broke.
func (s *Stream) Err() error { return s.err }

// ID is the response id (what Client.Cancel takes); it is known when ChatStream returns.
func (s *Stream) ID() string { return s.id.Load().(string) }

// Result is the answer so far, accumulated from the deltas: the whole answer with its usage
// once Next has returned false.
func (s *Stream) Result() *Result {
	res := s.res
	res.ID = s.ID()
	res.ToolCalls = nil
	for _, call := range s.calls {
		if call != nil {
			res.ToolCalls = append(res.ToolCalls, *call)
		}
	}
	return &res
}

// Close ends the stream early: the HTTP response is closed, and the server stops
// generating and frees the slot. It is safe to call more than once, and after the end.
func (s *Stream) Close() error {
	s.finish(errStreamClosed)
	return nil
}

var errStreamClosed = errors.New("botframework: stream closed")

// finish ends the stream once: err is nil at [DONE].
func (s *Stream) finish(err error) {
	s.closeOnce.Do(func() {
		s.done.Store(true)
		if err != errStreamClosed {
			s.err = err
		}
		s.cancel()
		s.body.Close()
		if s.onEnd != nil {
			if err == nil {
				s.onEnd(s.Result(), nil)
			} else {
				s.onEnd(nil, err)
			}
		}
	})
}

// fill reads events until at least one delta is pending or the stream ends; false at the
// end.
func (s *Stream) fill() bool {
	for len(s.pending) == 0 {
		data, err := s.readEvent()
		if err != nil {
			if s.done.Load() { // closed meanwhile
				return false
			}
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: %s: the stream ended without [DONE]: %w", ErrServerUnavailable, s.base,
					io.ErrUnexpectedEOF)
			} else {
				err = transportError(s.ctx, s.base, err)
			}
			s.finish(err)
			return false
		}
		if data == nil {
			continue // an event without data (a comment, a keep-alive)
		}
		if bytes.Equal(data, []byte("[DONE]")) {
			s.finish(nil)
			return false
		}
		if err := s.parse(data); err != nil {
			s.finish(err)
			return false
		}
	}
	return true
}

// readEvent reads one server-sent event and returns its data (lines joined by "\n"), nil
// for an event without data.
func (s *Stream) readEvent() ([]byte, error) {
	var data []byte
	seen := false
	for {
		line, err := s.reader.ReadBytes('\n')
		if err != nil && (len(line) == 0 || !errors.Is(err, io.EOF)) {
			return nil, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			if seen {
				return data, nil
			}
			if err != nil {
				return nil, err
			}
			continue
		}
		if field, value, ok := bytes.Cut(line, []byte(":")); ok && string(field) == "data" {
			value = bytes.TrimPrefix(value, []byte(" "))
			if seen {
				data = append(data, '\n')
			}
			data = append(data, value...)
			seen = true
		} else if !ok && string(line) == "data" {
			seen = true
		}
		if err != nil { // the last line without a newline
			if seen {
				return data, nil
			}
			return nil, err
		}
	}
}

type chunkJSON struct {
	ID      string `json:"id"`
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
			ToolCalls        []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		Text         string  `json:"text"` // completions
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usageJSON      `json:"usage"`
	Error json.RawMessage `json:"error"`
}

// parse turns one chunk into pending deltas, accumulating the result.
func (s *Stream) parse(data []byte) error {
	var ch chunkJSON
	if err := json.Unmarshal(data, &ch); err != nil {
		return fmt.Errorf("botframework: a stream event is not JSON: %w (%q)", err, truncate(string(data), 200))
	}
	if len(ch.Error) > 0 && string(ch.Error) != "null" {
		apiErr, _ := parseAPIError(0, nil, data)
		if apiErr.Message == "" {
			apiErr.Message = strings.TrimSpace(string(ch.Error))
		}
		return apiErr
	}
	if ch.ID != "" && s.ID() == "" {
		s.id.Store(ch.ID)
	}
	if ch.Model != "" {
		s.res.Model = ch.Model
	}
	for _, choice := range ch.Choices {
		if choice.Index != 0 {
			continue // one choice per request (n = 1)
		}
		d := Delta{ID: ch.ID, Content: choice.Delta.Content + choice.Text, Reasoning: choice.Delta.ReasoningContent}
		if choice.FinishReason != nil {
			d.FinishReason = *choice.FinishReason
			s.res.FinishReason = d.FinishReason
		}
		s.res.Text += d.Content
		s.res.Reasoning += d.Reasoning
		for _, tc := range choice.Delta.ToolCalls {
			d.ToolCalls = append(d.ToolCalls, ToolCallDelta{Index: tc.Index, ID: tc.ID, Name: tc.Function.Name,
				Arguments: tc.Function.Arguments})
			if tc.Index < 0 || tc.Index > 1024 {
				continue
			}
			for len(s.calls) <= tc.Index {
				s.calls = append(s.calls, nil)
			}
			call := s.calls[tc.Index]
			if call == nil {
				call = &ToolCall{}
				s.calls[tc.Index] = call
			}
			if tc.ID != "" {
				call.ID = tc.ID
			}
			if tc.Function.Name != "" {
				call.Name = tc.Function.Name
			}
			call.Arguments += tc.Function.Arguments
		}
		if d.Content != "" || d.Reasoning != "" || len(d.ToolCalls) > 0 || d.FinishReason != "" {
			s.pending = append(s.pending, d)
		}
	}
	if ch.Usage != nil {
		u := ch.Usage.usage()
		s.res.Usage = u
		s.pending = append(s.pending, Delta{ID: ch.ID, Usage: &u})
	}
	return nil
}

// ChatStream streams the answer to prompt (a user message). opts may be nil. Close the
// stream (or cancel ctx for ChatStreamContext) to stop it early.
func (c *Client) ChatStream(prompt string, opts *ChatOptions) (*Stream, error) {
	return c.ChatMessagesStreamContext(context.Background(), []Message{UserMessage(prompt)}, opts)
}

// ChatStreamContext is ChatStream with a context: cancelling it ends the stream, and the
// server stops generating.
func (c *Client) ChatStreamContext(ctx context.Context, prompt string, opts *ChatOptions) (*Stream, error) {
	return c.ChatMessagesStreamContext(ctx, []Message{UserMessage(prompt)}, opts)
}

// ChatMessagesStream streams the answer to a conversation.
func (c *Client) ChatMessagesStream(msgs []Message, opts *ChatOptions) (*Stream, error) {
	return c.ChatMessagesStreamContext(context.Background(), msgs, opts)
}

// ChatMessagesStreamContext is ChatMessagesStream with a context: cancelling it ends the
// stream, and the server stops generating.
func (c *Client) ChatMessagesStreamContext(ctx context.Context, msgs []Message, opts *ChatOptions) (*Stream, error) {
	body, err := c.chatBody(msgs, opts, true)
	if err != nil {
		return nil, err
	}
	return c.openStream(ctx, "/v1/chat/completions", body)
}

// CompleteStream streams the continuation of a raw prompt (POST /v1/completions).
func (c *Client) CompleteStream(prompt string, opts *ChatOptions) (*Stream, error) {
	return c.CompleteStreamContext(context.Background(), prompt, opts)
}

// CompleteStreamContext is CompleteStream with a context.
func (c *Client) CompleteStreamContext(ctx context.Context, prompt string, opts *ChatOptions) (*Stream, error) {
	body, err := c.completionBody(prompt, opts, true)
	if err != nil {
		return nil, err
	}
	return c.openStream(ctx, "/v1/completions", body)
}
