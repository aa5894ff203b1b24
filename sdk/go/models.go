package botframework

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
)

// ModelInfo is a model the server declares (GET /v1/models).
type ModelInfo struct {
	ID      string    `json:"id"`       // the name requests use
	Object  string    `json:"object"`   // "model"
	Created int64     `json:"created"`  // Unix seconds
	OwnedBy string    `json:"owned_by"` // "botframework"
	Meta    ModelMeta `json:"meta"`     // botframework's state of the model
}

// ModelMeta is botframework's state of a declared model.
type ModelMeta struct {
	State       string   `json:"state"`               // "loaded", "loading", "unloaded", "unloading" or "failed"
	Error       string   `json:"error,omitempty"`     // why the last load failed
	Kind        string   `json:"kind,omitempty"`      // "chat" or "embedding" (loaded models)
	Aliases     []string `json:"aliases,omitempty"`   // other names requests may use
	Load        string   `json:"load,omitempty"`      // "preload" (at start) or "lazy" (on first use)
	NCtx        int      `json:"n_ctx,omitempty"`     // KV cells (context tokens) shared by its slots
	NVocab      int      `json:"n_vocab,omitempty"`   // vocabulary size
	NumSlots    int      `json:"num_slots,omitempty"` // sequences it runs at once
	NumInFlight int      `json:"num_in_flight"`       // requests using it now
	NumLoads    int      `json:"num_loads"`           // times it was loaded
	MemoryBytes int64    `json:"memory_bytes"`        // memory it takes while loaded
	IdleS       float64  `json:"idle_s"`              // seconds since its last request
	KeepAliveS  float64  `json:"keep_alive_s"`        // idle seconds before it unloads; -1: never
}

// Models lists the models the server declares, loaded or not (GET /v1/models).
func (c *Client) Models() ([]ModelInfo, error) { return c.ModelsContext(context.Background()) }

// ModelsContext is Models with a context.
func (c *Client) ModelsContext(ctx context.Context) ([]ModelInfo, error) {
	var list struct {
		Data []ModelInfo `json:"data"`
	}
	if err := c.doJSON(ctx, http.MethodGet, "/v1/models", nil, &list); err != nil {
		return nil, err
	}
	return list.Data, nil
}

// Cancel stops a running or queued request by its response id (Result.ID, Stream.ID), or
// every request of a session by the session's id (POST /v1/cancel/{id}). It returns how
// many requests it stopped; 0 if none ran (finished already, or an unknown id). A cancelled
// stream ends early with finish reason "stop".
func (c *Client) Cancel(id string) (int, error) { return c.CancelContext(context.Background(), id) }

// CancelContext is Cancel with a context.
func (c *Client) CancelContext(ctx context.Context, id string) (int, error) {
	var out struct {
		NumCancelled int `json:"num_cancelled"`
	}
	if id == "" {
		return 0, fmt.Errorf("%w: Cancel needs an id", ErrBadRequest)
	}
	if err := c.doJSON(ctx, http.MethodPost, "/v1/cancel/"+url.PathEscape(id), nil, &out); err != nil {
		return 0, err
	}
	return out.NumCancelled, nil
}

// Embed returns one embedding vector per text (POST /v1/embeddings), in order. The server
// pools and L2-normalises them; chat models answer too, dedicated embedding models better.
func (c *Client) Embed(texts ...string) ([][]float32, error) {
	return c.EmbedContext(context.Background(), texts...)
}

// EmbedContext is Embed with a context.
func (c *Client) EmbedContext(ctx context.Context, texts ...string) ([][]float32, error) {
	if len(texts) == 0 {
		return [][]float32{}, nil
	}
	req := struct {
		Model string   `json:"model"`
		Input []string `json:"input"`
	}{c.model, texts}
	var resp struct {
		Data []struct {
			Index     int       `json:"index"`
			Embedding []float32 `json:"embedding"`
		} `json:"data"`
	}
	if err := c.doJSON(ctx, http.MethodPost, "/v1/embeddings", req, &resp); err != nil {
		return nil, err
	}
	if len(resp.Data) != len(texts) {
		return nil, fmt.Errorf("botframework: asked %d embeddings, the server answered %d", len(texts), len(resp.Data))
	}
	sort.SliceStable(resp.Data, func(i, j int) bool { return resp.Data[i].Index < resp.Data[j].Index })
	out := make([][]float32, len(resp.Data))
	for i, d := range resp.Data {
		out[i] = d.Embedding
	}
	return out, nil
}
