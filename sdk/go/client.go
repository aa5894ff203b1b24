package botframework

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Client talks to one botframework server about one model. It is safe for concurrent use.
type Client struct {
	base      string // without a trailing slash
	apiKey    string
	hc        *http.Client
	ownHC     bool
	timeout   time.Duration
	retries   int
	model     string
	server    *serverProcess
	closeOnce sync.Once
	closeErr  error
}

// New connects to a server and has it serve model (see NewContext).
func New(model string, opts ...Option) (*Client, error) {
	return NewContext(context.Background(), model, opts...)
}

// NewContext finds the server (WithBaseURL, else $BOTFRAMEWORK_URL, else
// http://127.0.0.1:8000), checks it with GET /health, and asks it to serve model with
// POST /v1/models/{model}/load. model is a catalog name, a name the server declares, or a
// path to a .gguf file (made absolute first; the server serves paths inside its configured
// model folders); "" means the server's default model. Later calls use the id the server
// answers with (Client.Model).
//
// With WithAutoStart, a server is started when none answers; Close stops it.
func NewContext(ctx context.Context, model string, opts ...Option) (*Client, error) {
	cfg := config{startTimeout: DefaultStartTimeout}
	for _, opt := range opts {
		opt(&cfg)
	}
	base := cfg.baseURL
	explicit := base != ""
	if !explicit {
		base = os.Getenv("BOTFRAMEWORK_URL")
		explicit = base != ""
	}
	if !explicit {
		base = DefaultBaseURL
	}
	base = strings.TrimRight(base, "/")
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("botframework: invalid base URL %q: want http://host:port", base)
	}
	model, err := modelSpec(model)
	if err != nil {
		return nil, err
	}
	c := &Client{base: base, apiKey: cfg.apiKey, hc: cfg.httpClient, timeout: cfg.timeout, retries: cfg.retries}
	if c.hc == nil {
		c.hc = &http.Client{}
		c.ownHC = true
	}

	probe := c
	if cfg.autoStart { // one quick look: no retries before starting a server ourselves
		probe = &Client{base: c.base, hc: c.hc, timeout: c.timeout}
	}
	health, err := probe.health(ctx)
	load := model
	switch {
	case err == nil:
		if health.Status != "ok" {
			wctx, cancel := context.WithTimeout(ctx, cfg.startTimeout)
			health, err = c.waitHealthy(wctx, nil)
			cancel()
			if err != nil {
				return nil, err
			}
		}
	case cfg.autoStart && errors.Is(err, ErrServerUnavailable) && ctx.Err() == nil:
		var startErr error
		c.server, c.base, startErr = startServer(ctx, &cfg, c.base, explicit, model)
		if startErr != nil {
			return nil, startErr
		}
		wctx, cancel := context.WithTimeout(ctx, cfg.startTimeout)
		health, err = c.waitHealthy(wctx, c.server)
		cancel()
		if err != nil {
			c.Close()
			return nil, err
		}
		if model != "" && health.Model != "" {
			load = health.Model // the server we started serves model as its default
		}
	default:
		return nil, err
	}
	if load == "" {
		load = health.Model
	}
	card, err := c.load(ctx, load)
	if err != nil {
		if c.server != nil {
			c.Close()
		}
		return nil, err
	}
	c.model = card.ID
	return c, nil
}

// modelSpec makes a .gguf path absolute (the server resolves paths against its own working
// directory, which need not be ours).
func modelSpec(model string) (string, error) {
	if !strings.HasSuffix(strings.ToLower(model), ".gguf") || strings.HasPrefix(model, "hf:") {
		return model, nil
	}
	abs, err := filepath.Abs(model)
	if err != nil {
		return "", fmt.Errorf("botframework: model path %q: %w", model, err)
	}
	return abs, nil
}

// Model is the id the server serves this client's model under; requests name it.
func (c *Client) Model() string { return c.model }

// BaseURL is the server's address, e.g. "http://127.0.0.1:8000".
func (c *Client) BaseURL() string { return c.base }

// Close stops a server the client started (SIGTERM, then a kill if it has not exited after
// 10 s) and releases idle connections. It is safe to call more than once.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		if c.ownHC {
			c.hc.CloseIdleConnections()
		}
		if c.server != nil {
			c.closeErr = c.server.stop(10 * time.Second)
		}
	})
	return c.closeErr
}

type healthInfo struct {
	Status string            `json:"status"`
	Model  string            `json:"model"`
	Models map[string]string `json:"models"`
	Error  string            `json:"error"`
}

// health asks GET /health once per attempt: 200 "ok", or 503 "loading" (still starting)
// or "degraded" (its default model failed to load; another may still load). Other answers
// mean it is not a botframework server.
func (c *Client) health(ctx context.Context) (healthInfo, error) {
	for attempt := 0; ; attempt++ {
		h, err := c.healthOnce(ctx)
		var unreachable *unreachableError
		if err == nil || ctx.Err() != nil || attempt >= c.retries || !errors.As(err, &unreachable) {
			return h, err
		}
		t := time.NewTimer(backoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return h, err
		case <-t.C:
		}
	}
}

// unreachableError marks healthOnce's transport failures (retried by health).
type unreachableError struct{ err error }

// Error is the transport error's message.
func (e *unreachableError) Error() string { return e.err.Error() }

// Unwrap is the transport error.
func (e *unreachableError) Unwrap() error { return e.err }

func (c *Client) healthOnce(ctx context.Context) (healthInfo, error) {
	var h healthInfo
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	resp, err := c.sendOnce(ctx, http.MethodGet, "/health", nil)
	if err != nil {
		return h, &unreachableError{transportError(ctx, c.base, err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return h, transportError(ctx, c.base, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return h, fmt.Errorf("%w: %s does not look like a botframework server: GET /health answered %s",
			ErrServerUnavailable, c.base, resp.Status)
	}
	if err := json.Unmarshal(data, &h); err != nil || h.Status == "" {
		return h, fmt.Errorf("%w: %s does not look like a botframework server: GET /health answered %q",
			ErrServerUnavailable, c.base, truncate(string(data), 200))
	}
	return h, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// waitHealthy polls GET /health until it answers "ok", the server process (if any) exits,
// or ctx ends. A server whose default model failed ("degraded") is an error if we started it.
func (c *Client) waitHealthy(ctx context.Context, proc *serverProcess) (healthInfo, error) {
	var exited <-chan struct{}
	if proc != nil {
		exited = proc.done
	}
	var last error
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		h, err := c.healthOnce(pctx)
		cancel()
		switch {
		case err == nil && h.Status == "ok":
			return h, nil
		case err == nil && h.Status == "degraded" && proc != nil:
			return h, fmt.Errorf("%w: the botframework server started at %s could not load its model: %s%s",
				ErrServerUnavailable, c.base, h.Error, proc.outputTail())
		case err == nil && h.Status == "degraded":
			return h, nil // the named model may still load; POST .../load will tell
		case err != nil:
			last = err
		default:
			last = fmt.Errorf("status %q", h.Status)
		}
		select {
		case <-ctx.Done():
			if proc != nil {
				return h, fmt.Errorf("%w: the botframework server started at %s did not become healthy: %w (last: %v)%s",
					ErrServerUnavailable, c.base, ctx.Err(), last, proc.outputTail())
			}
			return h, fmt.Errorf("%w: %s did not finish loading: %w (last: %v)", ErrServerUnavailable, c.base, ctx.Err(), last)
		case <-exited:
			return h, fmt.Errorf("%w: the botframework server exited before it was ready: %v%s",
				ErrServerUnavailable, proc.exitErr(), proc.outputTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Client) load(ctx context.Context, model string) (ModelInfo, error) {
	var card ModelInfo
	err := c.doJSON(ctx, http.MethodPost, "/v1/models/"+url.PathEscape(model)+"/load", nil, &card)
	if err == nil && card.ID == "" {
		err = fmt.Errorf("botframework: POST /v1/models/%s/load answered no model id", model)
	}
	return card, err
}

// doJSON sends in (if not nil) as JSON and decodes the 2xx answer into out (if not nil),
// within the client's timeout.
func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("botframework: encoding the request: %w", err)
		}
	}
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return transportError(ctx, c.base, err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("botframework: decoding the answer of %s %s: %w", method, path, err)
	}
	return nil
}

// send makes the request and returns a 2xx response with its body unread, or an error:
// *APIError for an error answer, a wrapped ErrServerUnavailable for a transport failure, a
// wrapped context error if ctx ended. It retries as WithRetries allows.
func (c *Client) send(ctx context.Context, method, path string, body []byte) (*http.Response, error) {
	idempotent := method == http.MethodGet || method == http.MethodHead || method == http.MethodDelete
	for attempt := 0; ; attempt++ {
		resp, err := c.sendOnce(ctx, method, path, body)
		var wait time.Duration
		switch {
		case err != nil:
			if ctx.Err() != nil || attempt >= c.retries || !(isDialError(err) || idempotent) {
				return nil, transportError(ctx, c.base, err)
			}
			wait = backoff(attempt)
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			return resp, nil
		default:
			data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			apiErr := errorFromResponse(resp, data)
			if resp.StatusCode != http.StatusServiceUnavailable || attempt >= c.retries {
				return nil, apiErr
			}
			wait = apiErr.RetryAfter
			if wait <= 0 {
				wait = backoff(attempt)
			}
			err = apiErr
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			var apiErr *APIError
			if errors.As(err, &apiErr) {
				return nil, apiErr
			}
			return nil, transportError(ctx, c.base, err)
		case <-t.C:
		}
	}
}

func backoff(attempt int) time.Duration {
	d := 250 * time.Millisecond << attempt
	if d > 5*time.Second || d <= 0 {
		d = 5 * time.Second
	}
	return d
}

func (c *Client) sendOnce(ctx context.Context, method, path string, body []byte) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	return c.hc.Do(req)
}
