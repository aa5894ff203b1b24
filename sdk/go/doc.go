// Package botframework is the Go client for botframework, a local-LLM server with an
// OpenAI-compatible HTTP API.
//
// New finds a running server (WithBaseURL, else $BOTFRAMEWORK_URL, else
// http://127.0.0.1:8000), checks it, and asks it to serve a model: a catalog name such as
// "smollm2-135m-instruct" or a path to a .gguf file. With WithAutoStart it starts
// `botframework serve` itself when no server answers, and Close stops it again.
//
//	llm, err := botframework.New("smollm2-135m-instruct")
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer llm.Close()
//	res, _ := llm.Chat("Summarize this module", nil)
//	fmt.Println(res.Text)
//
// The calls:
//
//   - Chat and ChatMessages: a whole answer as a Result (text, tool calls, usage).
//   - ChatStream and ChatMessagesStream: a Stream of Deltas, stopped by its context or Close.
//   - ChatInto: structured output decoded into a Go value; the JSON schema the server
//     enforces is generated from the value's type (see SchemaOf).
//   - Complete: a raw prompt continued (/v1/completions).
//   - Embed: embedding vectors (/v1/embeddings).
//   - Session: a conversation whose turns reuse the server's KV cache.
//   - Cancel: stop a running request by its response id, or a session's requests.
//   - Models: the models the server declares and their state.
//
// Every call has a ...Context variant taking a context.Context; cancelling it closes the
// HTTP request, and the server stops generating and frees the slot.
//
// Errors the server sends are *APIError values. errors.Is tells the common cases apart:
// ErrServerUnavailable, ErrUnauthorized, ErrModelNotFound, ErrBusy, ErrContextLength,
// ErrBadRequest and ErrCancelled; ErrTruncated is a ChatInto answer cut off by MaxTokens.
// Requests are retried only where that is safe (see WithRetries).
//
// The package uses the standard library only.
package botframework
