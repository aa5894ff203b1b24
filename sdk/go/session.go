package botframework

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
)

// Session is a conversation whose turns reuse the server's KV cache: every request carries
// the session's id, so the server keeps the conversation's state in a slot (or stores it)
// between turns and computes only the new tokens. The history is kept here and sent
// whole each turn, so a session the server dropped still answers correctly, only slower.
//
// One turn runs at a time; a Session is safe for concurrent use (turns wait their turn).
type Session struct {
	c       *Client
	id      string
	turn    chan struct{} // holds a token while a turn runs (a stream's: until it ends)
	mu      sync.Mutex    // guards history
	history []Message
}

// SessionInfo is where the server keeps a session's state (GET /v1/sessions/{id}).
type SessionInfo struct {
	ID              string `json:"id"`                // the session's id
	Model           string `json:"model"`             // the model its state belongs to
	State           string `json:"state"`             // "new", "busy", "idle" (in a slot), "evicted", "parked", ...
	NumCachedTokens int    `json:"num_cached_tokens"` // tokens of the conversation the server keeps
}

// Session starts a conversation (POST /v1/sessions). Close it to free the server's state.
func (c *Client) Session() (*Session, error) { return c.SessionContext(context.Background()) }

// SessionContext is Session with a context.
func (c *Client) SessionContext(ctx context.Context) (*Session, error) {
	var out SessionInfo
	if err := c.doJSON(ctx, http.MethodPost, "/v1/sessions?model="+url.QueryEscape(c.model), nil, &out); err != nil {
		return nil, err
	}
	if out.ID == "" {
		return nil, errors.New("botframework: POST /v1/sessions answered no id")
	}
	return c.ResumeSession(out.ID), nil
}

// ResumeSession continues the session with this id, with history as its turns so far (the
// server keeps the KV cache, not the messages). Any id works: the server creates sessions
// on their first turn.
func (c *Client) ResumeSession(id string, history ...Message) *Session {
	return &Session{c: c, id: id, turn: make(chan struct{}, 1), history: append([]Message(nil), history...)}
}

// ID is the session's id (what Client.Cancel takes to stop its requests).
func (s *Session) ID() string { return s.id }

// History is a copy of the conversation so far (a running turn joins it when it ends).
func (s *Session) History() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.history...)
}

// Add appends messages to the history without asking for an answer, e.g. a system message
// first.
func (s *Session) Add(msgs ...Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.history = append(s.history, msgs...)
}

// turnMessages is the history with msgs after it: what a turn sends.
func (s *Session) turnMessages(msgs []Message) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(append([]Message(nil), s.history...), msgs...)
}

// record adds a finished turn: its new messages and the answer.
func (s *Session) record(msgs []Message, res *Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.history = append(append(s.history, msgs...), res.Message())
}

func (s *Session) acquire(ctx context.Context) error {
	select {
	case s.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("botframework: waiting for the session's previous turn: %w", ctx.Err())
	}
}

func (s *Session) release() { <-s.turn }

func (s *Session) options(opts *ChatOptions) *ChatOptions {
	o := ChatOptions{}
	if opts != nil {
		o = *opts
	}
	o.SessionID = s.id
	return &o
}

// Chat sends prompt as the next user turn and returns the answer; both join the history
// (only if the turn succeeds). opts may be nil.
func (s *Session) Chat(prompt string, opts *ChatOptions) (*Result, error) {
	return s.ChatMessagesContext(context.Background(), []Message{UserMessage(prompt)}, opts)
}

// ChatContext is Chat with a context.
func (s *Session) ChatContext(ctx context.Context, prompt string, opts *ChatOptions) (*Result, error) {
	return s.ChatMessagesContext(ctx, []Message{UserMessage(prompt)}, opts)
}

// ChatMessages appends msgs (user turns, tool results) and asks for the next answer.
func (s *Session) ChatMessages(msgs []Message, opts *ChatOptions) (*Result, error) {
	return s.ChatMessagesContext(context.Background(), msgs, opts)
}

// ChatMessagesContext is ChatMessages with a context.
func (s *Session) ChatMessagesContext(ctx context.Context, msgs []Message, opts *ChatOptions) (*Result, error) {
	if err := s.acquire(ctx); err != nil {
		return nil, err
	}
	defer s.release()
	res, err := s.c.ChatMessagesContext(ctx, s.turnMessages(msgs), s.options(opts))
	if err != nil {
		return nil, err
	}
	s.record(msgs, res)
	return res, nil
}

// ChatStream streams the answer to the next user turn. The turn joins the history when the
// stream ends with [DONE]; the session's next turn waits until the stream has ended or is
// closed.
func (s *Session) ChatStream(prompt string, opts *ChatOptions) (*Stream, error) {
	return s.ChatStreamContext(context.Background(), prompt, opts)
}

// ChatStreamContext is ChatStream with a context.
func (s *Session) ChatStreamContext(ctx context.Context, prompt string, opts *ChatOptions) (*Stream, error) {
	if err := s.acquire(ctx); err != nil {
		return nil, err
	}
	msgs := []Message{UserMessage(prompt)}
	stream, err := s.c.ChatMessagesStreamContext(ctx, s.turnMessages(msgs), s.options(opts))
	if err != nil {
		s.release()
		return nil, err
	}
	end := func(res *Result, err error) {
		if err == nil {
			s.record(msgs, res)
		}
		s.release()
	}
	if stream.done.Load() { // it ended while opening (a short answer): the turn is over
		end(stream.Result(), stream.err)
	} else {
		stream.onEnd = end
	}
	return stream, nil
}

// Info asks the server where the session's state is (GET /v1/sessions/{id}).
func (s *Session) Info() (SessionInfo, error) { return s.InfoContext(context.Background()) }

// InfoContext is Info with a context.
func (s *Session) InfoContext(ctx context.Context) (SessionInfo, error) {
	var out SessionInfo
	err := s.c.doJSON(ctx, http.MethodGet, "/v1/sessions/"+url.PathEscape(s.id), nil, &out)
	return out, err
}

// Cancel stops the session's running request, if any.
func (s *Session) Cancel() (int, error) { return s.c.Cancel(s.id) }

// Close frees the session on the server (DELETE /v1/sessions/{id}): its requests are
// cancelled and its KV state dropped. The history stays readable.
func (s *Session) Close() error { return s.CloseContext(context.Background()) }

// CloseContext is Close with a context.
func (s *Session) CloseContext(ctx context.Context) error {
	return s.c.doJSON(ctx, http.MethodDelete, "/v1/sessions/"+url.PathEscape(s.id), nil, nil)
}
