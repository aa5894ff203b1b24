//go:build unix

package botframework

import (
	"os"
	"syscall"
)

// terminate asks the process to stop (SIGTERM): the server finishes or cancels its
// requests and frees the model.
func terminate(p *os.Process) error { return p.Signal(syscall.SIGTERM) }
