package botframework

// Integration tests against a real botframework server: one shared server started in
// TestMain (through the SDK's own auto-start), plus dedicated ones for the API-key, busy
// and .gguf-path cases. The executable is $BOTFRAMEWORK_BIN, else botframework on PATH;
// without one these tests fail (go test -short skips them).

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const testModel = "smollm2-135m-instruct"

var (
	shared    *Client // the server every integration test shares
	sharedErr error   // why there is none
	serverBin string
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Unsetenv("BOTFRAMEWORK_URL") // the tests start their own servers on free ports
	if !testing.Short() {
		serverBin, sharedErr = findServer()
		if sharedErr == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			shared, sharedErr = NewContext(ctx, testModel, WithServerCommand(serverBin), WithBaseURL(freePortURL()),
				// --draft-always: a request that asks for drafts gets them, paying here or not (Speculative)
				WithServerArgs("--parallel", "2", "--ctx-size", "8192", "--draft-always"), WithServerOutput(&serverLog))
			cancel()
		}
	}
	code := m.Run()
	if code != 0 && serverLog.String() != "" {
		fmt.Fprintf(os.Stderr, "--- the shared server's output (end) ---\n%s\n", serverLog.String())
	}
	if shared != nil {
		shared.Close()
	}
	os.Exit(code)
}

var serverLog tailBuffer = tailBuffer{max: 64 << 10}

func findServer() (string, error) {
	if bin := os.Getenv("BOTFRAMEWORK_BIN"); bin != "" {
		return bin, nil
	}
	if bin, err := exec.LookPath("botframework"); err == nil {
		return bin, nil
	}
	return "", errors.New("no botframework executable: set BOTFRAMEWORK_BIN or put botframework on PATH " +
		"(or run go test -short to skip the integration tests)")
}

// server is the shared client; the test fails (never skips) when there is none.
func server(t *testing.T) *Client {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: not with -short")
	}
	if sharedErr != nil {
		t.Fatalf("no botframework server for the integration tests: %v", sharedErr)
	}
	return shared
}

// dedicated starts a server of the test's own (closed at the end of the test).
func dedicated(t *testing.T, model string, opts ...Option) *Client {
	t.Helper()
	server(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := NewContext(ctx, model, append([]Option{WithServerCommand(serverBin), WithBaseURL(freeAddr(t))}, opts...)...)
	if err != nil {
		t.Fatalf("starting a dedicated server: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if c.server == nil {
		t.Fatalf("a server already answered at %s", c.BaseURL())
	}
	return c
}

// freePortURL is a loopback URL nothing listens at (yet).
func freePortURL() string {
	port, err := freePort("127.0.0.1")
	if err != nil {
		panic(err)
	}
	return "http://127.0.0.1:" + port
}

// stats is GET /v1/stats: the scheduler's counters.
func stats(t *testing.T, c *Client) map[string]float64 {
	t.Helper()
	var raw map[string]any
	if err := c.doJSON(context.Background(), http.MethodGet, "/v1/stats", nil, &raw); err != nil {
		t.Fatalf("GET /v1/stats: %v", err)
	}
	out := map[string]float64{}
	for k, v := range raw {
		if f, ok := v.(float64); ok {
			out[k] = f
		}
	}
	return out
}

// waitIdle polls /v1/stats until no sequence runs, waits or holds a slot. It bounds the wait
// generously (liveness, not speed): a request that kept running would keep its slot.
func waitIdle(t *testing.T, c *Client) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := stats(t, c)
		if s["num_running"] == 0 && s["num_waiting"] == 0 && s["num_busy_slots"] == 0 && s["num_prefilling"] == 0 {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server still runs a request: %v", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// long asks for many tokens the model cannot end early: a request that runs until cancelled.
func long() *ChatOptions {
	return &ChatOptions{MaxTokens: 2000, IgnoreEOS: true}
}

func TestIntegrationChat(t *testing.T) {
	llm := server(t)
	res, err := llm.Chat("Say hello to Ann.", &ChatOptions{MaxTokens: 24, Temperature: Ptr(0.0)})
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(res.Text) == "" || !strings.HasPrefix(res.ID, "chatcmpl-") || res.Model != llm.Model() {
		t.Fatalf("%+v", res)
	}
	if res.FinishReason != "stop" && res.FinishReason != "length" {
		t.Fatalf("finish reason %q", res.FinishReason)
	}
	u := res.Usage
	if u.PromptTokens <= 0 || u.CompletionTokens <= 0 || u.CompletionTokens > 24 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
		t.Fatalf("usage %+v", u)
	}
	// a conversation with a system prompt, and every sampling option the server takes
	msgs := []Message{UserMessage("My name is Ann."), AssistantMessage("Hello Ann!"), UserMessage("What is my name?")}
	opts := &ChatOptions{System: "You are terse.", MaxTokens: 16, Seed: Ptr[int64](7), Temperature: Ptr(0.8),
		TopK: Ptr(40), TopP: Ptr(0.9), MinP: Ptr(0.05), RepeatPenalty: Ptr(1.1), PresencePenalty: Ptr(0.1),
		FrequencyPenalty: Ptr(0.1), Stop: []string{"\n\n"}}
	a, err := llm.ChatMessages(msgs, opts)
	if err != nil {
		t.Fatal(err)
	}
	if a.FinishReason == "" || a.Usage.PromptTokens <= u.PromptTokens {
		t.Fatalf("the system prompt and history are sent: %d prompt tokens", a.Usage.PromptTokens)
	}
}

func TestIntegrationSpeculative(t *testing.T) {
	llm := server(t)
	code := "def load_config(path):\n    with open(path) as f:\n        data = f.read()\n    config = {}\n" +
		"    for line in data.splitlines():\n        key, value = line.split(\"=\", 1)\n" +
		"        config[key.strip()] = value.strip()\n    return config\n"
	prompt := "Repeat this code exactly:\n```python\n" + code + "```"
	drafted, err := llm.Chat(prompt, &ChatOptions{MaxTokens: 48, Temperature: Ptr(0.0), Speculative: Ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := llm.Chat(prompt, &ChatOptions{MaxTokens: 48, Temperature: Ptr(0.0), Speculative: Ptr(false)})
	if err != nil {
		t.Fatal(err)
	}
	if drafted.Usage.AcceptedPredictionTokens <= 0 || plain.Usage.AcceptedPredictionTokens != 0 ||
		plain.Usage.RejectedPredictionTokens != 0 {
		t.Fatalf("drafted %+v, plain %+v", drafted.Usage, plain.Usage)
	}
}

func TestIntegrationStream(t *testing.T) {
	llm := server(t)
	stream, err := llm.ChatStream("Count from one to five.", &ChatOptions{MaxTokens: 32})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !strings.HasPrefix(stream.ID(), "chatcmpl-") {
		t.Fatalf("id %q", stream.ID())
	}
	var text strings.Builder
	var finish string
	var usage *Usage
	n := 0
	for stream.Next() {
		d := stream.Delta()
		if d.ID != stream.ID() {
			t.Fatalf("delta id %q", d.ID)
		}
		text.WriteString(d.Content)
		if d.FinishReason != "" {
			finish = d.FinishReason
		}
		if d.Usage != nil {
			usage = d.Usage
		}
		n++
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	res := stream.Result()
	if n < 3 || text.String() == "" || res.Text != text.String() || finish == "" || res.FinishReason != finish {
		t.Fatalf("%d deltas, %q, %+v", n, text.String(), res)
	}
	if usage == nil || usage.CompletionTokens <= 0 || usage.CompletionTokens > 32 || res.Usage != *usage {
		t.Fatalf("usage %+v / %+v", usage, res.Usage)
	}
}

func TestIntegrationStreamCancelledByContext(t *testing.T) {
	llm := server(t)
	before := waitIdle(t, llm)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := llm.ChatStreamContext(ctx, "Tell me a very long story.", long())
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	for i := 0; i < 3 && stream.Next(); i++ {
	}
	if stream.Err() != nil {
		t.Fatal(stream.Err())
	}
	cancel()
	for stream.Next() { // what was already received, then the end
	}
	if !errors.Is(stream.Err(), context.Canceled) {
		t.Fatalf("the stream ends with the context's error: %v", stream.Err())
	}
	after := waitIdle(t, llm) // the server saw the connection close and freed the slot
	if generated := after["num_generated_tokens"] - before["num_generated_tokens"]; generated >= 2000 {
		t.Fatalf("the request ran to its end (%v tokens) instead of stopping", generated)
	}

	// a whole (non-streamed) answer is stopped by its context too
	ctx2, cancel2 := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := llm.ChatContext(ctx2, "Tell me a very long story.", long())
		done <- err
	}()
	waitRunning(t, llm)
	cancel2()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	waitIdle(t, llm)
}

// waitRunning polls /v1/stats until a sequence runs.
func waitRunning(t *testing.T, c *Client) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for stats(t, c)["num_running"] == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the request never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIntegrationCancelByID(t *testing.T) {
	llm := server(t)
	waitIdle(t, llm)
	stream, err := llm.ChatStream("Tell me a very long story.", long())
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Next() {
		t.Fatal(stream.Err())
	}
	n, err := llm.Cancel(stream.ID())
	if err != nil || n != 1 {
		t.Fatalf("Cancel(%s) = %d, %v", stream.ID(), n, err)
	}
	for stream.Next() {
	}
	if err := stream.Err(); err != nil && !errors.Is(err, ErrCancelled) {
		t.Fatalf("a cancelled stream ends cleanly: %v", err)
	}
	res := stream.Result()
	if res.FinishReason == "length" || res.Usage.CompletionTokens == 0 || res.Usage.CompletionTokens >= 2000 {
		t.Fatalf("the request was not stopped: %+v", res)
	}
	waitIdle(t, llm)
	if n, err := llm.Cancel(stream.ID()); err != nil || n != 0 {
		t.Fatalf("cancelling a finished request: %d, %v", n, err)
	}

	// a session's id cancels its running turn
	sess, err := llm.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	turn, err := sess.ChatStream("Tell me a very long story.", long())
	if err != nil {
		t.Fatal(err)
	}
	defer turn.Close()
	if !turn.Next() {
		t.Fatal(turn.Err())
	}
	if n, err := sess.Cancel(); err != nil || n != 1 {
		t.Fatalf("Session.Cancel = %d, %v", n, err)
	}
	for turn.Next() {
	}
	if n := turn.Result().Usage.CompletionTokens; n == 0 || n >= 2000 {
		t.Fatalf("the turn was not stopped: %+v", turn.Result())
	}
	waitIdle(t, llm)
}

type city struct {
	Name       string    `json:"name"`
	Country    string    `json:"country"`
	Population uint32    `json:"population"`
	Capital    bool      `json:"capital"`
	Landmarks  [2]string `json:"landmarks"`
	Location   struct {
		Lat float64 `json:"lat"`
		Lon float64 `json:"lon"`
	} `json:"location"`
	Size     string  `json:"size" enum:"small,medium,large" description:"how big the city is"`
	Nickname *string `json:"nickname,omitempty"`
}

func TestIntegrationStructuredOutput(t *testing.T) {
	llm := server(t)
	var c city
	res, err := llm.ChatInto("Describe Paris as JSON.", &c, &ChatOptions{MaxTokens: 300, Seed: Ptr[int64](1),
		Temperature: Ptr(0.0)})
	if err != nil {
		t.Fatalf("%v (%+v)", err, res)
	}
	if err := validateJSON(MustSchemaOf(city{}), []byte(res.Text)); err != nil {
		t.Fatalf("the answer does not validate against the struct's schema: %v\n%s", err, res.Text)
	}
	var again city
	// DeepEqual, not fmt.Sprint: Nickname is a pointer, and two decodes never share an address
	if err := json.Unmarshal([]byte(res.Text), &again); err != nil || !reflect.DeepEqual(again, c) {
		t.Fatalf("decoded %+v, want %+v (%v)", c, again, err)
	}
	if c.Size != "small" && c.Size != "medium" && c.Size != "large" {
		t.Fatalf("enum: %q", c.Size)
	}
	// a slice root and a recursive type ($defs, $ref) are schemas the server enforces too (a
	// tiny model nests trees deeply: a cut-off answer is fine, a refused schema is not)
	var list []string
	if res, err := llm.ChatInto("Three colors as a JSON list.", &list, &ChatOptions{MaxTokens: 40, Temperature: Ptr(0.0)}); err != nil && !errors.Is(err, ErrTruncated) {
		t.Fatalf("%v (%+v)", err, res)
	}
	var tr tree
	if _, err := llm.ChatInto("A tree of numbers.", &tr, &ChatOptions{MaxTokens: 12}); err != nil && !errors.Is(err, ErrTruncated) {
		t.Fatal(err)
	}
}

type weatherArgs struct {
	City string `json:"city" description:"the city's name"`
	Unit string `json:"unit" enum:"celsius,fahrenheit"`
}

func TestIntegrationTools(t *testing.T) {
	llm := server(t)
	weather, err := NewTool("get_weather", "Get the current weather in a city", weatherArgs{})
	if err != nil {
		t.Fatal(err)
	}
	clock := Tool{Name: "get_time", Description: "Get the current time"}
	tools := []Tool{weather, clock}
	prompt := "What is the weather in Paris?"

	res, err := llm.Chat(prompt, &ChatOptions{Tools: tools, ToolChoice: ToolChoiceRequired, MaxTokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.ToolCalls) == 0 || res.FinishReason != "tool_calls" {
		t.Fatalf("tool_choice required forces a call: %+v", res)
	}
	for _, call := range res.ToolCalls {
		if call.ID == "" || (call.Name != "get_weather" && call.Name != "get_time") || !json.Valid([]byte(call.Arguments)) {
			t.Fatalf("call %+v", call)
		}
	}

	res, err = llm.Chat(prompt, &ChatOptions{Tools: tools, ToolChoice: "get_weather", MaxTokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.ToolCalls) != 1 || res.ToolCalls[0].Name != "get_weather" {
		t.Fatalf("a named tool choice forces that tool: %+v", res)
	}
	var args weatherArgs
	if err := res.ToolCalls[0].Decode(&args); err != nil || args.City == "" ||
		(args.Unit != "celsius" && args.Unit != "fahrenheit") {
		t.Fatalf("arguments %q: %v", res.ToolCalls[0].Arguments, err)
	}

	// the tool's result goes back; the model answers in text
	msgs := []Message{UserMessage(prompt), res.Message(), ToolMessage(res.ToolCalls[0].ID, `{"temperature": 21}`)}
	final, err := llm.ChatMessages(msgs, &ChatOptions{Tools: tools, ToolChoice: ToolChoiceNone, MaxTokens: 40})
	if err != nil {
		t.Fatal(err)
	}
	if len(final.ToolCalls) != 0 || final.Text == "" {
		t.Fatalf("tool_choice none answers in text: %+v", final)
	}

	// streamed calls arrive as pieces and add up to the same shape
	stream, err := llm.ChatStream(prompt, &ChatOptions{Tools: tools, ToolChoice: "get_weather", MaxTokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	pieces := 0
	for stream.Next() {
		pieces += len(stream.Delta().ToolCalls)
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	sres := stream.Result()
	if pieces == 0 || len(sres.ToolCalls) != 1 || sres.ToolCalls[0].Name != "get_weather" || sres.ToolCalls[0].ID == "" ||
		sres.ToolCalls[0].Decode(&weatherArgs{}) != nil || sres.FinishReason != "tool_calls" {
		t.Fatalf("%d pieces, %+v", pieces, sres)
	}
}

func TestIntegrationEmbed(t *testing.T) {
	llm := server(t)
	vecs, err := llm.Embed("The cat sat on the mat.", "A kitten rested on the rug.", "Stock prices fell sharply.")
	if err != nil {
		t.Fatal(err)
	}
	if len(vecs) != 3 || len(vecs[0]) == 0 || len(vecs[0]) != len(vecs[2]) {
		t.Fatalf("%d vectors", len(vecs))
	}
	for i, v := range vecs {
		var norm float64
		for _, x := range v {
			norm += float64(x) * float64(x)
		}
		if math.Abs(math.Sqrt(norm)-1) > 1e-3 {
			t.Fatalf("vector %d has norm %v (the server normalises)", i, math.Sqrt(norm))
		}
	}
	if empty, err := llm.Embed(); err != nil || len(empty) != 0 {
		t.Fatalf("%v %v", empty, err)
	}
}

func TestIntegrationComplete(t *testing.T) {
	llm := server(t)
	res, err := llm.Complete("The capital of France is", &ChatOptions{MaxTokens: 8, Temperature: Ptr(0.0)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Text == "" || !strings.HasPrefix(res.ID, "cmpl-") || res.Usage.CompletionTokens == 0 || res.Usage.CompletionTokens > 8 {
		t.Fatalf("%+v", res)
	}
	stream, err := llm.CompleteStream("Once upon a time", &ChatOptions{MaxTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	for stream.Next() {
	}
	if stream.Err() != nil || stream.Result().Text == "" || stream.Result().Usage.CompletionTokens == 0 {
		t.Fatalf("%v %+v", stream.Err(), stream.Result())
	}
}

func TestIntegrationSession(t *testing.T) {
	llm := server(t)
	sess, err := llm.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if !strings.HasPrefix(sess.ID(), "sess-") {
		t.Fatalf("id %q", sess.ID())
	}
	sess.Add(SystemMessage("You are a helpful assistant who remembers names."))
	first, err := sess.Chat("Hello! My name is Zorblax. Please remember it.", &ChatOptions{MaxTokens: 24})
	if err != nil {
		t.Fatal(err)
	}
	info, err := sess.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.State == "new" || info.NumCachedTokens < first.Usage.PromptTokens {
		t.Fatalf("after a turn the server keeps the session's tokens: %+v (prompt %d)", info, first.Usage.PromptTokens)
	}
	second, err := sess.Chat("What is my name?", &ChatOptions{MaxTokens: 16})
	if err != nil {
		t.Fatal(err)
	}
	// the whole first turn (prompt and answer) is reused, only the new turn is computed
	if second.Usage.CachedTokens < first.Usage.PromptTokens || second.Usage.PromptTokens <= first.Usage.PromptTokens {
		t.Fatalf("the second turn does not reuse the first: first %+v, second %+v", first.Usage, second.Usage)
	}
	history := sess.History()
	if len(history) != 5 || history[0].Role != RoleSystem || history[2].Role != RoleAssistant ||
		history[2].Content != first.Text || history[4].Content != second.Text {
		t.Fatalf("history %+v", history)
	}

	// a streamed turn joins the history when it ends
	stream, err := sess.ChatStream("Say it once more.", &ChatOptions{MaxTokens: 16})
	if err != nil {
		t.Fatal(err)
	}
	for stream.Next() {
	}
	if stream.Err() != nil || stream.Result().Usage.CachedTokens < second.Usage.PromptTokens {
		t.Fatalf("%v %+v", stream.Err(), stream.Result().Usage)
	}
	if h := sess.History(); len(h) != 7 || h[6].Content != stream.Result().Text {
		t.Fatalf("history after the stream: %d turns", len(h))
	}

	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	var apiErr *APIError
	if _, err := sess.Info(); !errors.As(err, &apiErr) || apiErr.Status != 404 {
		t.Fatalf("a closed session is gone: %v", err)
	}
}

func TestIntegrationModels(t *testing.T) {
	llm := server(t)
	models, err := llm.Models()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range models {
		if m.ID == llm.Model() {
			if m.Meta.State != "loaded" || m.Meta.NCtx == 0 || m.Object != "model" {
				t.Fatalf("%+v", m)
			}
			return
		}
	}
	t.Fatalf("%s is not listed: %+v", llm.Model(), models)
}

func TestIntegrationUnknownModel(t *testing.T) {
	llm := server(t)
	_, err := New("no-such-model-anywhere", WithBaseURL(llm.BaseURL()))
	if !errors.Is(err, ErrModelNotFound) {
		t.Fatalf("New: %v", err)
	}
	_, err = llm.Chat("hi", &ChatOptions{Model: "no-such-model-anywhere"})
	var apiErr *APIError
	if !errors.Is(err, ErrModelNotFound) || !errors.As(err, &apiErr) || apiErr.Status != 404 {
		t.Fatalf("Chat: %v", err)
	}
	// and the errors stay apart
	if errors.Is(err, ErrBusy) || errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrServerUnavailable) {
		t.Fatalf("%v matches too much", err)
	}
	_, err = llm.Chat("hi", &ChatOptions{MaxTokens: 1 << 20})
	if !errors.Is(err, ErrBadRequest) {
		t.Fatalf("an invalid max_tokens: %v", err)
	}
}

func TestIntegrationContextLength(t *testing.T) {
	llm := server(t)
	_, err := llm.Chat(strings.Repeat("hello world ", 5000), &ChatOptions{MaxTokens: 8})
	if !errors.Is(err, ErrContextLength) || !errors.Is(err, ErrBadRequest) {
		t.Fatalf("got %v", err)
	}
}

func TestIntegrationServerDown(t *testing.T) {
	server(t)
	_, err := New(testModel, WithBaseURL(freeAddr(t)))
	if !errors.Is(err, ErrServerUnavailable) {
		t.Fatalf("got %v", err)
	}
}

func TestIntegrationAPIKey(t *testing.T) {
	llm := dedicated(t, testModel, WithAPIKey("right-key"), WithServerArgs("--api-key", "right-key", "--parallel", "1"))
	if _, err := llm.Chat("hi", &ChatOptions{MaxTokens: 4}); err != nil {
		t.Fatalf("the right key: %v", err)
	}
	for _, opts := range [][]Option{{WithAPIKey("wrong-key")}, {}} {
		_, err := New(testModel, append(opts, WithBaseURL(llm.BaseURL()))...)
		var apiErr *APIError
		if !errors.Is(err, ErrUnauthorized) || !errors.As(err, &apiErr) || apiErr.Status != 401 {
			t.Fatalf("got %v", err)
		}
	}
	// once the server is stopped, calls say so
	if err := llm.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := llm.Chat("hi", &ChatOptions{MaxTokens: 4}); !errors.Is(err, ErrServerUnavailable) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestIntegrationBusy(t *testing.T) {
	llm := dedicated(t, testModel, WithServerArgs("--parallel", "1", "--max-queue", "1", "--ctx-size", "4096"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	running, err := llm.ChatStreamContext(ctx, "Tell me a very long story.", long())
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close()
	queued := make(chan error, 1)
	go func() { // waits for the only slot
		s, err := llm.ChatStreamContext(ctx, "Tell me another long story.", long())
		if err == nil {
			s.Close()
		}
		queued <- err
	}()
	deadline := time.Now().Add(20 * time.Second)
	for stats(t, llm)["num_waiting"] < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the second request never queued")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, err = llm.Chat("One more?", &ChatOptions{MaxTokens: 4})
	var apiErr *APIError
	if !errors.Is(err, ErrBusy) || !errors.As(err, &apiErr) || apiErr.Status != 503 || apiErr.RetryAfter <= 0 {
		t.Fatalf("a full queue: %v (%+v)", err, apiErr)
	}
	if errors.Is(err, ErrServerUnavailable) || errors.Is(err, ErrBadRequest) {
		t.Fatalf("%v matches too much", err)
	}
	cancel()
	<-queued
	waitIdle(t, llm)
}

func TestIntegrationGGUFPath(t *testing.T) {
	server(t)
	path := os.Getenv("BOTFRAMEWORK_TEST_GGUF")
	if path == "" {
		path = cachedGGUF()
	}
	if path == "" {
		t.Skip("no SmolLM2-135M .gguf in the model cache (set BOTFRAMEWORK_TEST_GGUF)")
	}
	wd, _ := os.Getwd()
	rel, err := filepath.Rel(wd, path)
	if err != nil {
		rel = path
	}
	// auto-started with the path as its model
	llm := dedicated(t, rel, WithServerArgs("--parallel", "1", "--ctx-size", "2048", "--models-dir", filepath.Dir(path)))
	want := strings.TrimSuffix(filepath.Base(path), ".gguf")
	if llm.Model() != want {
		t.Fatalf("model id %q, want %q", llm.Model(), want)
	}
	if res, err := llm.Chat("hi", &ChatOptions{MaxTokens: 4}); err != nil || res.Model != llm.Model() {
		t.Fatalf("%v %+v", err, res)
	}
	// a running server asked for the path: POST /v1/models/{absolute path}/load
	again, err := New(rel, WithBaseURL(llm.BaseURL()))
	if err != nil {
		t.Fatalf("loading by path: %v", err)
	}
	if again.Model() != want {
		t.Fatalf("loading by path: model id %q, want %q", again.Model(), want)
	}
}

// cachedGGUF is the test model's file in botframework's cache, if it is there.
func cachedGGUF() string {
	var dirs []string
	if d := os.Getenv("BOTFRAMEWORK_CACHE"); d != "" {
		dirs = append(dirs, filepath.Join(d, "models"))
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		dirs = append(dirs, filepath.Join(d, "botframework", "models"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, ".cache", "botframework", "models"))
	}
	for _, d := range dirs {
		if matches, _ := filepath.Glob(filepath.Join(d, "SmolLM2-135M-Instruct*.gguf")); len(matches) > 0 {
			return matches[0]
		}
	}
	return ""
}
