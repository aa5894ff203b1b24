package botframework

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeServer is an httptest server that answers /health and the load endpoint as
// botframework does, and whatever else the test routes.
type fakeServer struct {
	*httptest.Server
	mu       sync.Mutex
	requests []fakeRequest
	routes   map[string]http.HandlerFunc // "METHOD /path"
}

type fakeRequest struct {
	Method, Path, RawPath, Auth string
	Body                        map[string]any
}

func newFake(t *testing.T, routes map[string]http.HandlerFunc) *fakeServer {
	t.Helper()
	f := &fakeServer{routes: routes}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(data))
		req := fakeRequest{Method: r.Method, Path: r.URL.Path, RawPath: r.URL.EscapedPath(),
			Auth: r.Header.Get("Authorization")}
		_ = json.Unmarshal(data, &req.Body)
		f.mu.Lock()
		f.requests = append(f.requests, req)
		f.mu.Unlock()
		if h, ok := f.routes[r.Method+" "+r.URL.Path]; ok {
			h(w, r)
			return
		}
		switch {
		case r.URL.Path == "/health":
			writeJSON(w, 200, map[string]any{"status": "ok", "model": "default-model"})
		case r.Method == "POST" && strings.HasPrefix(r.URL.Path, "/v1/models/") && strings.HasSuffix(r.URL.Path, "/load"):
			id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/models/"), "/load")
			if strings.HasSuffix(id, ".gguf") {
				id = strings.TrimSuffix(filepath.Base(id), ".gguf")
			}
			writeJSON(w, 200, map[string]any{"id": id, "object": "model", "meta": map[string]any{"state": "loaded"}})
		default:
			writeJSON(w, 404, map[string]any{"error": map[string]any{"message": "Not Found", "type": "not_found_error"}})
		}
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeServer) calls(method, path string) []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeRequest
	for _, r := range f.requests {
		if r.Method == method && r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func apiError(status int, typ, code, msg string, header map[string]string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		writeJSON(w, status, map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": code}})
	}
}

func chatAnswer(text string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"id": "chatcmpl-1", "object": "chat.completion", "model": "m",
			"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": text},
				"finish_reason": "stop"}},
			"usage": map[string]any{"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
				"prompt_tokens_details":     map[string]any{"cached_tokens": 1},
				"completion_tokens_details": map[string]any{"accepted_prediction_tokens": 1, "rejected_prediction_tokens": 4}}})
	}
}

func TestErrorMapping(t *testing.T) {
	cases := []struct {
		name    string
		handler http.HandlerFunc
		is      []error
		isNot   []error
		status  int
		code    string
		retry   time.Duration
	}{
		{"unauthorized", apiError(401, "authentication_error", "invalid_api_key", "Incorrect API key", nil),
			[]error{ErrUnauthorized}, []error{ErrBadRequest, ErrBusy, ErrModelNotFound}, 401, "invalid_api_key", 0},
		{"model not found", apiError(404, "invalid_request_error", "model_not_found", "no such model", nil),
			[]error{ErrModelNotFound}, []error{ErrBadRequest, ErrUnauthorized}, 404, "model_not_found", 0},
		{"busy", apiError(503, "server_busy", "server_busy", "queue full", map[string]string{"Retry-After": "2"}),
			[]error{ErrBusy}, []error{ErrBadRequest, ErrServerUnavailable}, 503, "server_busy", 2 * time.Second},
		{"context length", apiError(400, "invalid_request_error", "context_length_exceeded", "too long", nil),
			[]error{ErrContextLength, ErrBadRequest}, []error{ErrBusy}, 400, "context_length_exceeded", 0},
		{"bad request", apiError(400, "invalid_request_error", "invalid_value", "bad temperature", nil),
			[]error{ErrBadRequest}, []error{ErrContextLength, ErrModelNotFound}, 400, "invalid_value", 0},
		{"too large", apiError(413, "invalid_request_error", "", "body too large", nil),
			[]error{ErrBadRequest}, nil, 413, "", 0},
		{"cancelled", apiError(499, "cancelled", "cancelled", "cancelled", nil),
			[]error{ErrCancelled}, []error{ErrBadRequest}, 499, "cancelled", 0},
		{"server error", apiError(500, "server_error", "internal_error", "boom", nil),
			nil, []error{ErrBadRequest, ErrBusy, ErrServerUnavailable, ErrUnauthorized}, 500, "internal_error", 0},
		{"not json", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "gateway down", 502) },
			nil, []error{ErrBadRequest, ErrBusy}, 502, "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, map[string]http.HandlerFunc{"POST /v1/chat/completions": tc.handler})
			c, err := New("m", WithBaseURL(f.URL))
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Chat("hi", nil)
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("not an *APIError: %#v", err)
			}
			if apiErr.Status != tc.status || apiErr.Code != tc.code || apiErr.RetryAfter != tc.retry {
				t.Fatalf("got %+v", apiErr)
			}
			if apiErr.Message == "" || !strings.Contains(err.Error(), fmt.Sprint(tc.status)) {
				t.Fatalf("message: %q / %q", apiErr.Message, err.Error())
			}
			for _, target := range tc.is {
				if !errors.Is(err, target) {
					t.Errorf("errors.Is(%v, %v) = false", err, target)
				}
			}
			for _, target := range tc.isNot {
				if errors.Is(err, target) {
					t.Errorf("errors.Is(%v, %v) = true", err, target)
				}
			}
		})
	}
}

func TestRetryAfterHeader(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"3": 3 * time.Second, "0.5": 500 * time.Millisecond, "": 0, "-1": 0, "soon": 0,
		now.Add(7 * time.Second).Format(http.TimeFormat):  7 * time.Second,
		now.Add(-7 * time.Second).Format(http.TimeFormat): 0,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("Retry-After %q: got %v, want %v", in, got, want)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestServerUnavailable(t *testing.T) {
	_, err := New("m", WithBaseURL(freeAddr(t)))
	if !errors.Is(err, ErrServerUnavailable) {
		t.Fatalf("got %v", err)
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		t.Fatalf("a transport failure is not an *APIError: %v", err)
	}
	if _, err := New("m", WithBaseURL("localhost:8000")); err == nil || !strings.Contains(err.Error(), "invalid base URL") {
		t.Fatalf("a URL without a scheme: %v", err)
	}
	// something that is not botframework answers
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()
	if _, err := New("m", WithBaseURL(other.URL)); !errors.Is(err, ErrServerUnavailable) ||
		!strings.Contains(err.Error(), "does not look like a botframework server") {
		t.Fatalf("got %v", err)
	}
}

func TestNewLoadsTheModelAndUsesItsID(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{"POST /v1/chat/completions": chatAnswer("hello")})
	dir := t.TempDir()
	rel, err := filepath.Rel(mustGetwd(t), filepath.Join(dir, "My Model.Q4.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(rel, WithBaseURL(f.URL+"/"), WithAPIKey("k1"))
	if err != nil {
		t.Fatal(err)
	}
	loads := f.requests[1]
	abs := filepath.Join(dir, "My Model.Q4.gguf")
	if loads.Path != "/v1/models/"+abs+"/load" {
		t.Fatalf("the path is sent absolute: %q", loads.Path)
	}
	if !strings.Contains(loads.RawPath, "%2F") || loads.Auth != "Bearer k1" {
		t.Fatalf("escaped path and the key: %+v", loads)
	}
	if c.Model() != "My Model.Q4" {
		t.Fatalf("model id %q", c.Model())
	}
	res, err := c.Chat("hi", &ChatOptions{MaxTokens: 5, Temperature: Ptr(0.0), Seed: Ptr[int64](3), System: "be brief",
		Speculative: Ptr(true), Extra: map[string]any{"overflow": "truncate", "max_tokens": 6}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Text != "hello" || res.Usage != (Usage{3, 2, 5, 1, 1, 4}) || res.ID != "chatcmpl-1" || res.FinishReason != "stop" {
		t.Fatalf("%+v", res)
	}
	body := f.calls("POST", "/v1/chat/completions")[0].Body
	msgs := body["messages"].([]any)
	if body["model"] != "My Model.Q4" || body["temperature"] != 0.0 || body["seed"] != 3.0 || body["speculative"] != true ||
		body["overflow"] != "truncate" || body["max_tokens"] != 6.0 || len(msgs) != 2 ||
		msgs[0].(map[string]any)["role"] != "system" {
		t.Fatalf("request body %v", body)
	}
	for _, absent := range []string{"stream", "top_p", "tools", "session_id", "response_format"} {
		if _, ok := body[absent]; ok {
			t.Errorf("%s sent unasked", absent)
		}
	}
	// no model named: the server's default
	c, err = New("", WithBaseURL(f.URL))
	if err != nil || c.Model() != "default-model" {
		t.Fatalf("%v %q", err, c.Model())
	}
}

func mustGetwd(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

func TestRetriesOnlyWhereSafe(t *testing.T) {
	var busy atomic.Int32
	var chats atomic.Int32
	f := newFake(t, map[string]http.HandlerFunc{
		"POST /v1/chat/completions": func(w http.ResponseWriter, r *http.Request) {
			chats.Add(1)
			if busy.Add(-1) >= 0 {
				apiError(503, "server_busy", "server_busy", "busy", map[string]string{"Retry-After": "0.01"})(w, r)
				return
			}
			chatAnswer("ok")(w, r)
		},
		"POST /v1/completions": func(w http.ResponseWriter, r *http.Request) {
			chats.Add(1)
			// the request arrived and the connection breaks: it may have started generating
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		},
		"GET /v1/models": func(w http.ResponseWriter, r *http.Request) {
			chats.Add(1)
			if busy.Add(-1) >= 0 {
				conn, _, _ := w.(http.Hijacker).Hijack()
				conn.Close()
				return
			}
			writeJSON(w, 200, map[string]any{"data": []any{map[string]any{"id": "m"}}})
		},
	})
	c, err := New("m", WithBaseURL(f.URL), WithRetries(2))
	if err != nil {
		t.Fatal(err)
	}
	busy.Store(2)
	if _, err := c.Chat("hi", nil); err != nil || chats.Load() != 3 {
		t.Fatalf("503 twice then 200: %v after %d requests", err, chats.Load())
	}
	chats.Store(0)
	busy.Store(5)
	_, err = c.Chat("hi", nil)
	var apiErr *APIError
	if !errors.Is(err, ErrBusy) || !errors.As(err, &apiErr) || apiErr.RetryAfter != 10*time.Millisecond || chats.Load() != 3 {
		t.Fatalf("still busy after 2 retries: %v after %d requests", err, chats.Load())
	}
	chats.Store(0)
	if _, err := c.Complete("hi", nil); !errors.Is(err, ErrServerUnavailable) || chats.Load() != 1 {
		t.Fatalf("a POST that reached the server is never resent: %v after %d requests", err, chats.Load())
	}
	chats.Store(0)
	busy.Store(1)
	if models, err := c.Models(); err != nil || len(models) != 1 || chats.Load() != 2 {
		t.Fatalf("a GET whose connection broke is resent: %v after %d requests", err, chats.Load())
	}
	// without WithRetries nothing is resent
	c2, _ := New("m", WithBaseURL(f.URL))
	chats.Store(0)
	busy.Store(1)
	if _, err := c2.Chat("hi", nil); !errors.Is(err, ErrBusy) || chats.Load() != 1 {
		t.Fatalf("%v after %d requests", err, chats.Load())
	}
}

func TestRetriesConnectionRefused(t *testing.T) {
	addr := freeAddr(t)
	start := make(chan struct{})
	go func() { // the server comes up while the client retries
		time.Sleep(300 * time.Millisecond)
		l, err := net.Listen("tcp", strings.TrimPrefix(addr, "http://"))
		if err != nil {
			close(start)
			return
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/health" {
				writeJSON(w, 200, map[string]any{"status": "ok", "model": "m"})
				return
			}
			writeJSON(w, 200, map[string]any{"id": "m", "object": "model"})
		})}
		close(start)
		_ = srv.Serve(l)
	}()
	c, err := New("m", WithBaseURL(addr), WithRetries(4))
	<-start
	if err != nil || c.Model() != "m" {
		t.Fatalf("connection refused is retried: %v", err)
	}
}

func TestStreamParsing(t *testing.T) {
	sse := func(events ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			for _, e := range events {
				io.WriteString(w, e)
				w.(http.Flusher).Flush()
			}
		}
	}
	chunk := func(delta string, finish string) string {
		f := "null"
		if finish != "" {
			f = `"` + finish + `"`
		}
		return `data: {"id":"c1","model":"m","choices":[{"index":0,"delta":` + delta + `,"finish_reason":` + f + "}]}\n\n"
	}
	f := newFake(t, map[string]http.HandlerFunc{
		"POST /v1/chat/completions": func(w http.ResponseWriter, r *http.Request) {
			var body map[string]any
			_ = json.NewDecoder(r.Body).Decode(&body)
			switch body["messages"].([]any)[0].(map[string]any)["content"] {
			case "text":
				sse(chunk(`{"role":"assistant","content":""}`, ""), ": keep-alive\n\n",
					chunk(`{"content":"Hel"}`, ""), "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\r\ndata: \"delta\":{\"content\":\"lo\"}}]}\r\n\r\n",
					chunk(`{}`, "stop"),
					`data: {"id":"c1","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}`+"\n\n",
					"data: [DONE]\n\n")(w, r)
			case "tools":
				sse(chunk(`{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":""}}]}`, ""),
					chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}`, ""),
					chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}`, ""),
					chunk(`{}`, "tool_calls"), "data: [DONE]\n\n")(w, r)
			case "error":
				sse(chunk(`{"content":"x"}`, ""),
					`data: {"error":{"message":"queue full","type":"server_busy","param":null,"code":"server_busy"}}`+"\n\n",
					"data: [DONE]\n\n")(w, r)
			case "cut":
				sse(chunk(`{"content":"x"}`, ""))(w, r)
			}
		},
	})
	c, err := New("m", WithBaseURL(f.URL))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := c.ChatStream("text", nil)
	if err != nil {
		t.Fatal(err)
	}
	if stream.ID() != "c1" {
		t.Fatalf("the id is known when the stream opens: %q", stream.ID())
	}
	var deltas []Delta
	for stream.Next() {
		deltas = append(deltas, stream.Delta())
	}
	if stream.Err() != nil || len(deltas) != 4 || deltas[0].Content != "Hel" || deltas[1].Content != "lo" ||
		deltas[2].FinishReason != "stop" || deltas[3].Usage == nil || deltas[3].Usage.TotalTokens != 6 {
		t.Fatalf("%v %+v", stream.Err(), deltas)
	}
	if res := stream.Result(); res.Text != "Hello" || res.FinishReason != "stop" || res.Usage.CompletionTokens != 2 ||
		res.ID != "c1" || res.Model != "m" {
		t.Fatalf("%+v", res)
	}
	if body := f.calls("POST", "/v1/chat/completions")[0].Body; body["stream"] != true ||
		body["stream_options"].(map[string]any)["include_usage"] != true {
		t.Fatalf("%v", body)
	}

	stream, _ = c.ChatStream("tools", nil)
	for stream.Next() {
	}
	res := stream.Result()
	if stream.Err() != nil || len(res.ToolCalls) != 1 || res.ToolCalls[0] != (ToolCall{"call_1", "get", `{"a":1}`}) ||
		res.FinishReason != "tool_calls" {
		t.Fatalf("%v %+v", stream.Err(), res)
	}

	stream, _ = c.ChatStream("error", nil)
	for stream.Next() {
	}
	var apiErr *APIError
	if !errors.Is(stream.Err(), ErrBusy) || !errors.As(stream.Err(), &apiErr) || apiErr.Status != 0 ||
		apiErr.Message != "queue full" || stream.Result().Text != "x" {
		t.Fatalf("an error event: %v", stream.Err())
	}

	stream, _ = c.ChatStream("cut", nil)
	for stream.Next() {
	}
	if !errors.Is(stream.Err(), ErrServerUnavailable) || !errors.Is(stream.Err(), io.ErrUnexpectedEOF) {
		t.Fatalf("a stream cut before [DONE]: %v", stream.Err())
	}
}

func TestStreamTimeoutBoundsOnlyTheStart(t *testing.T) {
	release := make(chan struct{})
	f := newFake(t, map[string]http.HandlerFunc{
		"POST /v1/chat/completions": func(w http.ResponseWriter, r *http.Request) {
			var body map[string]any
			_ = json.NewDecoder(r.Body).Decode(&body)
			if body["messages"].([]any)[0].(map[string]any)["content"] == "slow start" {
				select {
				case <-release:
				case <-r.Context().Done():
				}
				return
			}
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, `data: {"id":"c1","choices":[{"index":0,"delta":{"content":"a"}}]}`+"\n\n")
			w.(http.Flusher).Flush()
			time.Sleep(150 * time.Millisecond) // longer than the timeout, after the start
			io.WriteString(w, `data: {"id":"c1","choices":[{"index":0,"delta":{"content":"b"}}]}`+"\n\ndata: [DONE]\n\n")
		},
	})
	defer close(release)
	c, err := New("m", WithBaseURL(f.URL), WithTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ChatStream("slow start", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	stream, err := c.ChatStream("slow middle", nil)
	if err != nil {
		t.Fatal(err)
	}
	for stream.Next() {
	}
	if stream.Err() != nil || stream.Result().Text != "ab" {
		t.Fatalf("%v %q", stream.Err(), stream.Result().Text)
	}
}

func TestChatIntoAndTools(t *testing.T) {
	type answer struct {
		City string `json:"city"`
		Temp int    `json:"temp"`
	}
	f := newFake(t, map[string]http.HandlerFunc{
		"POST /v1/chat/completions": func(w http.ResponseWriter, r *http.Request) {
			var body map[string]any
			_ = json.NewDecoder(r.Body).Decode(&body)
			if _, ok := body["tools"]; ok {
				writeJSON(w, 200, map[string]any{"id": "c2", "choices": []any{map[string]any{
					"message": map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{
						"id": "call_9", "type": "function", "function": map[string]any{"name": "get_weather",
							"arguments": `{"city":"Paris"}`}}}}, "finish_reason": "tool_calls"}}})
				return
			}
			chatAnswer(`{"city":"Oslo","temp":-3}`)(w, r)
		},
	})
	c, _ := New("m", WithBaseURL(f.URL))
	var a answer
	if _, err := c.ChatInto("weather?", &a, nil); err != nil || a != (answer{"Oslo", -3}) {
		t.Fatalf("%v %+v", err, a)
	}
	rf := f.calls("POST", "/v1/chat/completions")[0].Body["response_format"].(map[string]any)
	js := rf["json_schema"].(map[string]any)
	if rf["type"] != "json_schema" || js["name"] != "answer" || js["strict"] != true ||
		js["schema"].(map[string]any)["type"] != "object" {
		t.Fatalf("%v", rf)
	}
	if _, err := c.ChatInto("x", a, nil); err == nil {
		t.Fatal("ChatInto needs a pointer")
	}

	tool, err := NewTool("get_weather", "weather in a city", struct {
		City string `json:"city"`
	}{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Chat("weather in Paris?", &ChatOptions{Tools: []Tool{tool, {Name: "noop"}}, ToolChoice: "get_weather"})
	if err != nil {
		t.Fatal(err)
	}
	var args struct{ City string }
	if len(res.ToolCalls) != 1 || res.ToolCalls[0].ID != "call_9" || res.ToolCalls[0].Decode(&args) != nil ||
		args.City != "Paris" || res.Text != "" {
		t.Fatalf("%+v", res)
	}
	body := f.calls("POST", "/v1/chat/completions")[1].Body
	tools, _ := json.Marshal(body["tools"])
	want := `[{"function":{"description":"weather in a city","name":"get_weather","parameters":{"additionalProperties":false,` +
		`"properties":{"city":{"type":"string"}},"required":["city"],"type":"object"}},"type":"function"},` +
		`{"function":{"name":"noop","parameters":{"properties":{},"type":"object"}},"type":"function"}]`
	if string(tools) != want {
		t.Fatalf("tools\n got %s\nwant %s", tools, want)
	}
	choice, _ := json.Marshal(body["tool_choice"])
	if string(choice) != `{"function":{"name":"get_weather"},"type":"function"}` {
		t.Fatalf("tool_choice %s", choice)
	}
	// the assistant turn with its calls and the tool's answer go back in OpenAI's shape
	_, _ = c.ChatMessages([]Message{UserMessage("weather?"), res.Message(), ToolMessage("call_9", "12C")},
		&ChatOptions{ToolChoice: ToolChoiceNone})
	body = f.calls("POST", "/v1/chat/completions")[2].Body
	turns, _ := json.Marshal(body["messages"])
	want = `[{"content":"weather?","role":"user"},{"content":"","role":"assistant","tool_calls":[{"function":` +
		`{"arguments":"{\"city\":\"Paris\"}","name":"get_weather"},"id":"call_9","type":"function"}]},` +
		`{"content":"12C","role":"tool","tool_call_id":"call_9"}]`
	if string(turns) != want || body["tool_choice"] != "none" {
		t.Fatalf("messages\n got %s\nwant %s (%v)", turns, want, body["tool_choice"])
	}
}

func TestCompleteRefusesChatOptions(t *testing.T) {
	f := newFake(t, nil)
	c, _ := New("m", WithBaseURL(f.URL))
	if _, err := c.Complete("x", &ChatOptions{Tools: []Tool{{Name: "t"}}}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("got %v", err)
	}
	if len(f.calls("POST", "/v1/completions")) != 0 {
		t.Fatal("nothing is sent")
	}
}

func TestAutoStartErrors(t *testing.T) {
	_, err := New("m", WithBaseURL(freeAddr(t)), WithServerCommand(filepath.Join(t.TempDir(), "no-such-botframework")))
	if !errors.Is(err, ErrServerUnavailable) || !strings.Contains(err.Error(), "starting") {
		t.Fatalf("a missing executable: %v", err)
	}
	_, _, err = startServer(context.Background(), &config{serverCmd: "botframework"}, "http://192.0.2.1:9", true, "m")
	if !errors.Is(err, ErrServerUnavailable) || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("a remote address is not started: %v", err)
	}
	if runtimeHasShell() {
		script := filepath.Join(t.TempDir(), "fake-botframework")
		os.WriteFile(script, []byte("#!/bin/sh\necho \"cannot load model: $*\" >&2\nexit 3\n"), 0o755)
		base := freeAddr(t)
		_, err = New("m", WithBaseURL(base), WithServerCommand(script), WithServerArgs("--parallel", "3"))
		want := "cannot load model: serve --host 127.0.0.1 --port " + base[strings.LastIndex(base, ":")+1:] +
			" --model m --parallel 3"
		if !errors.Is(err, ErrServerUnavailable) || !strings.Contains(err.Error(), want) {
			t.Fatalf("a server that exits: %v", err)
		}
		// without a configured URL: a free port, and the URL to reach it
		proc, url, err := startServer(context.Background(), &config{serverCmd: script}, DefaultBaseURL, false, "")
		if err != nil {
			t.Fatal(err)
		}
		<-proc.done
		if !strings.HasPrefix(url, "http://127.0.0.1:") || url == DefaultBaseURL ||
			!strings.Contains(proc.out.String(), "--port "+url[len("http://127.0.0.1:"):]+"\n") {
			t.Fatalf("%s: %q", url, proc.out.String())
		}
	}
}

func runtimeHasShell() bool {
	_, err := os.Stat("/bin/sh")
	return err == nil
}
