package botframework

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// serverProcess is a `botframework serve` the client started (WithAutoStart).
type serverProcess struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	waitErr error         // set before done is closed
	out     *tailBuffer
}

// serverExecutable is WithServerCommand's path, else $BOTFRAMEWORK_BIN, else
// `botframework` on PATH.
func serverExecutable(cfg *config) (string, error) {
	if cfg.serverCmd != "" {
		return cfg.serverCmd, nil
	}
	if bin := os.Getenv("BOTFRAMEWORK_BIN"); bin != "" {
		return bin, nil
	}
	path, err := exec.LookPath("botframework")
	if err != nil {
		return "", fmt.Errorf("%w: no server answers, and none can be started: no botframework executable "+
			"(set WithServerCommand or $BOTFRAMEWORK_BIN, or put botframework on PATH): %w", ErrServerUnavailable, err)
	}
	return path, nil
}

// startServer starts `botframework serve --host H --port P [--model M] <args>` and returns
// it with the base URL to reach it. An explicitly configured base URL gives host and port
// (a loopback address only); otherwise a free loopback port is chosen.
func startServer(ctx context.Context, cfg *config, base string, explicit bool, model string) (*serverProcess, string, error) {
	bin, err := serverExecutable(cfg)
	if err != nil {
		return nil, "", err
	}
	host, port := "127.0.0.1", ""
	scheme := "http"
	if explicit {
		u, err := url.Parse(base)
		if err != nil {
			return nil, "", fmt.Errorf("botframework: invalid base URL %q: %w", base, err)
		}
		if u.Scheme == "https" {
			return nil, "", fmt.Errorf("%w: cannot auto-start a server for %s: botframework serve speaks plain HTTP",
				ErrServerUnavailable, base)
		}
		h := u.Hostname()
		if h != "localhost" {
			ip := net.ParseIP(h)
			if ip == nil || !ip.IsLoopback() {
				return nil, "", fmt.Errorf("%w: no server answers at %s, and auto-start only starts servers on "+
					"this machine's loopback address", ErrServerUnavailable, base)
			}
			host = h
		}
		port = u.Port()
		if u.Path != "" && u.Path != "/" {
			return nil, "", fmt.Errorf("%w: cannot auto-start a server for %s: it has a path", ErrServerUnavailable, base)
		}
	}
	if port == "" {
		if port, err = freePort(host); err != nil {
			return nil, "", fmt.Errorf("%w: no free port to start a server on: %w", ErrServerUnavailable, err)
		}
	}
	args := []string{"serve", "--host", host, "--port", port}
	if model != "" {
		args = append(args, "--model", model)
	}
	args = append(args, cfg.serverArgs...)
	out := &tailBuffer{max: 16 << 10}
	var w io.Writer = out
	if cfg.serverOutput != nil {
		w = io.MultiWriter(out, cfg.serverOutput)
	}
	// not exec.CommandContext: the server outlives NewContext's ctx, until Client.Close
	cmd := exec.Command(bin, args...)
	cmd.Stdout = w
	cmd.Stderr = w
	cmd.WaitDelay = 2 * time.Second // a grandchild holding the output pipe must not block Wait
	if err := ctx.Err(); err != nil {
		return nil, "", fmt.Errorf("botframework: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("%w: starting %s: %w", ErrServerUnavailable, bin, err)
	}
	p := &serverProcess{cmd: cmd, done: make(chan struct{}), out: out}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	hostport := net.JoinHostPort(host, port)
	return p, scheme + "://" + hostport, nil
}

// freePort asks the kernel for a free TCP port on host. Another process may take it before
// the server binds it; the server then exits and New reports its output.
func freePort(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

// stop ends the server: SIGTERM (a kill where there are no signals), then a kill if it has
// not exited after grace.
func (p *serverProcess) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil // already gone
	default:
	}
	if err := terminate(p.cmd.Process); err != nil && !errors.Is(err, os.ErrProcessDone) {
		_ = p.cmd.Process.Kill()
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("botframework: stopping the server: %w", err)
	}
	<-p.done
	return nil
}

func (p *serverProcess) exitErr() error {
	select {
	case <-p.done:
		if p.waitErr == nil {
			return errors.New("exit status 0")
		}
		return p.waitErr
	default:
		return nil
	}
}

// outputTail is the end of the server's output, to explain a failed start.
func (p *serverProcess) outputTail() string {
	s := strings.TrimSpace(p.out.String())
	if s == "" {
		return ""
	}
	return "\n--- botframework serve output (end) ---\n" + s
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

// Write keeps the end of b.
func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

// String is what was kept.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
