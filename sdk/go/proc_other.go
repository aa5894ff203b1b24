//go:build !unix

package botframework

import "os"

// terminate kills the process: there is no SIGTERM here.
func terminate(p *os.Process) error { return p.Kill() }
