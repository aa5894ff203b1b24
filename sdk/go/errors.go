package botframework

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Sentinel errors for errors.Is. An *APIError matches the one its status and code stand
// for; ErrServerUnavailable wraps transport failures.
var (
	// ErrServerUnavailable: no server answers at the base URL (connection refused, unknown
	// host) or the connection broke before an answer came.
	ErrServerUnavailable = errors.New("botframework: server unavailable")
	// ErrUnauthorized: the server wants an API key and got none or a wrong one (HTTP 401).
	ErrUnauthorized = errors.New("botframework: unauthorized")
	// ErrModelNotFound: the server does not know the model (HTTP 404, code model_not_found).
	ErrModelNotFound = errors.New("botframework: model not found")
	// ErrBusy: the server cannot take the request now (HTTP 503); the *APIError's
	// RetryAfter says when to try again.
	ErrBusy = errors.New("botframework: server busy")
	// ErrContextLength: the prompt does not fit the model's context (HTTP 400, code
	// context_length_exceeded). Such an error is an ErrBadRequest too.
	ErrContextLength = errors.New("botframework: context length exceeded")
	// ErrBadRequest: the server refused the request as invalid (HTTP 400, 413, 422).
	ErrBadRequest = errors.New("botframework: bad request")
	// ErrCancelled: the server stopped the request (POST /v1/cancel or a deleted session)
	// before it answered.
	ErrCancelled = errors.New("botframework: request cancelled")
	// ErrTruncated: ChatInto's answer was cut off by MaxTokens before its JSON was complete.
	ErrTruncated = errors.New("botframework: answer truncated at max_tokens")
)

// APIError is an error the server answered with: OpenAI's
// {"error": {"message", "type", "param", "code"}} and the HTTP status. Errors that arrive
// in the middle of a stream have Status 0.
type APIError struct {
	Status     int           // HTTP status; 0 for an error event inside a stream
	Type       string        // e.g. "invalid_request_error", "server_busy"
	Code       string        // e.g. "model_not_found", "context_length_exceeded"
	Param      string        // the request field at fault, if any
	Message    string        // the server's explanation
	RetryAfter time.Duration // from the Retry-After header (503); 0 if none
}

// Error describes the error with its status and code.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("botframework: ")
	if e.Status != 0 {
		fmt.Fprintf(&b, "HTTP %d", e.Status)
	} else {
		b.WriteString("stream error")
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " (%s)", e.Code)
	} else if e.Type != "" {
		fmt.Fprintf(&b, " (%s)", e.Type)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

// Is reports whether the error is one of the sentinels: ErrUnauthorized, ErrModelNotFound,
// ErrBusy, ErrContextLength, ErrBadRequest or ErrCancelled.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized || e.Code == "invalid_api_key" || e.Type == "authentication_error"
	case ErrModelNotFound:
		return e.Code == "model_not_found"
	case ErrBusy:
		return e.Status == http.StatusServiceUnavailable || e.Code == "server_busy"
	case ErrContextLength:
		return e.Code == "context_length_exceeded"
	case ErrBadRequest:
		switch e.Status {
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
			return true
		case 0:
			return e.Type == "invalid_request_error"
		}
		return false
	case ErrCancelled:
		return e.Status == 499 || e.Type == "cancelled" || e.Code == "cancelled"
	}
	return false
}

// Temporary reports whether the same request may succeed later (HTTP 503).
func (e *APIError) Temporary() bool { return e.Status == http.StatusServiceUnavailable }

// errorBody is the server's error shape.
type errorBody struct {
	Error *struct {
		Message string          `json:"message"`
		Type    string          `json:"type"`
		Param   json.RawMessage `json:"param"`
		Code    json.RawMessage `json:"code"`
	} `json:"error"`
}

// parseAPIError makes an *APIError from an error body (whole response or stream event).
// ok is false when body is not in the error shape.
func parseAPIError(status int, header http.Header, body []byte) (apiErr *APIError, ok bool) {
	var eb errorBody
	apiErr = &APIError{Status: status}
	if header != nil {
		apiErr.RetryAfter = parseRetryAfter(header.Get("Retry-After"), time.Now())
	}
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error == nil {
		return apiErr, false
	}
	apiErr.Message = eb.Error.Message
	apiErr.Type = eb.Error.Type
	apiErr.Param = rawString(eb.Error.Param)
	apiErr.Code = rawString(eb.Error.Code)
	return apiErr, true
}

// errorFromResponse reads an error response (status >= 400) into an *APIError.
func errorFromResponse(resp *http.Response, body []byte) *APIError {
	apiErr, ok := parseAPIError(resp.StatusCode, resp.Header, body)
	if !ok {
		msg := strings.TrimSpace(string(body))
		if len(msg) > 512 {
			msg = msg[:512] + "..."
		}
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		apiErr.Message = msg
	}
	return apiErr
}

// rawString is a JSON string's value, a number's text, or "" for null.
func rawString(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	return string(raw)
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(secs * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// transportError wraps a failed HTTP round trip. Context errors are returned as they are
// (errors.Is(err, context.Canceled) holds); anything else means the server could not be
// reached or went away, and wraps ErrServerUnavailable.
func transportError(ctx context.Context, base string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("botframework: %w", ctx.Err())
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("botframework: %w", err)
	}
	return fmt.Errorf("%w: %s: %w", ErrServerUnavailable, base, err)
}

// isDialError reports whether the request never reached a server (connection refused,
// no route, unknown host): nothing was sent, so any request may be retried.
func isDialError(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr)
}
