package botframework

import (
	"io"
	"net/http"
	"time"
)

// DefaultBaseURL is where New looks for a server when neither WithBaseURL nor
// $BOTFRAMEWORK_URL says otherwise.
const DefaultBaseURL = "http://127.0.0.1:8000"

// DefaultStartTimeout bounds how long WithAutoStart waits for a started server to answer
// GET /health with 200 (the first start may download the model).
const DefaultStartTimeout = 2 * time.Minute

// Option configures a Client (see New).
type Option func(*config)

type config struct {
	baseURL      string
	apiKey       string
	timeout      time.Duration
	httpClient   *http.Client
	autoStart    bool
	serverCmd    string
	serverArgs   []string
	serverOutput io.Writer
	startTimeout time.Duration
	retries      int
}

// WithBaseURL sets the server's address, e.g. "http://127.0.0.1:8000". It overrides
// $BOTFRAMEWORK_URL.
func WithBaseURL(url string) Option {
	return func(c *config) { c.baseURL = url }
}

// WithAPIKey sends the key as "Authorization: Bearer <key>" on every request (servers
// started with --api-key require it).
func WithAPIKey(key string) Option {
	return func(c *config) { c.apiKey = key }
}

// WithTimeout bounds each call: a whole answer for Chat, Complete, Embed and the other
// non-streaming calls; for streams, the wait for the response to start (the stream itself
// runs until its context ends). 0, the default, means no bound beyond the context.
func WithTimeout(d time.Duration) Option {
	return func(c *config) { c.timeout = d }
}

// WithHTTPClient sends the requests with hc instead of a default *http.Client. Keep
// hc.Timeout at 0 for streams, or it cuts them off; use WithTimeout instead.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *config) { c.httpClient = hc }
}

// WithAutoStart makes New start `botframework serve --port P --model <model>` as a child
// process when no server answers at the base URL, and wait until it is healthy. The
// executable is WithServerCommand's, else $BOTFRAMEWORK_BIN, else `botframework` on PATH.
// The port is the base URL's when one is set (it must be a loopback address), else a free
// one. Client.Close stops the server (SIGTERM, then a kill).
func WithAutoStart() Option {
	return func(c *config) { c.autoStart = true }
}

// WithServerCommand sets the botframework executable WithAutoStart runs, and turns
// auto-start on. The executable must run the server in its own process (exec), so that
// Close's SIGTERM reaches it.
func WithServerCommand(path string) Option {
	return func(c *config) {
		c.serverCmd = path
		c.autoStart = true
	}
}

// WithServerArgs adds flags to an auto-started `botframework serve`, e.g.
// WithServerArgs("--parallel", "4", "--ctx-size", "4096").
func WithServerArgs(args ...string) Option {
	return func(c *config) { c.serverArgs = append(c.serverArgs, args...) }
}

// WithServerOutput copies an auto-started server's stdout and stderr to w (by default they
// are kept only to explain a failed start).
func WithServerOutput(w io.Writer) Option {
	return func(c *config) { c.serverOutput = w }
}

// WithStartTimeout bounds the wait for an auto-started server (DefaultStartTimeout), and
// for a server that answers "loading" at New.
func WithStartTimeout(d time.Duration) Option {
	return func(c *config) { c.startTimeout = d }
}

// WithRetries lets each call retry up to n times where that is safe: when the connection
// was refused (nothing was sent), when an idempotent GET or DELETE failed in transit, and
// when the server answered 503 busy (it refused before generating anything), waiting as
// its Retry-After header says. A request that reached the server and may have started
// generating is never sent twice. Default 0.
func WithRetries(n int) Option {
	return func(c *config) {
		if n < 0 {
			n = 0
		}
		c.retries = n
	}
}
