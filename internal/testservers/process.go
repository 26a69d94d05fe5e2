// Package testservers starts real servers (a Dendrite Matrix homeserver,
// ngIRCd and InspIRCd IRC servers) on free loopback ports for integration
// tests. Each one
// lives in its own t.TempDir and is stopped by pid in t.Cleanup.
//
// Only tests may import it: it takes testing.TB and fails tests. The servers
// are installed by ./scripts/test-deps.sh; a missing one fails the test.
package testservers

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stopGrace is how long a server gets to exit on SIGTERM before SIGKILL.
const stopGrace = 10 * time.Second

// proc is one run of a server binary, its output appended to a log file.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
}

func startProc(dir, logPath, bin string, args ...string) (*proc, error) {
	return startProcAs(nil, dir, logPath, bin, args...)
}

// startProcAs is startProc run as cred's user (nil: this process's).
func startProcAs(cred *syscall.Credential, dir, logPath, bin string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "\n=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = procAttr()
	if cred != nil {
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.Credential = cred
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after stopGrace, and waits for the exit.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		p.kill()
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// FreePort returns a loopback port that was free a moment ago and that
// it has not handed out before in this process; callers retry once if
// another process takes it before their server binds it.
func FreePort(t testing.TB) int {
	t.Helper()
	givenMu.Lock()
	defer givenMu.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testservers: free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		// The kernel may hand a closed port out again at once: two
		// servers (or a daemon's two listeners) would then collide.
		if !given[port] {
			given[port] = true
			return port
		}
	}
}

// given are the ports FreePort handed out in this process.
var (
	givenMu sync.Mutex
	given   = map[int]bool{}
)

var (
	goBinOnce sync.Once
	goBinDir  string
)

// goBin is where `go install` puts binaries: GOBIN, else GOPATH/bin.
func goBin() string {
	goBinOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output()
		if err != nil {
			return
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) > 0 && strings.TrimSpace(lines[0]) != "" {
			goBinDir = strings.TrimSpace(lines[0])
		} else if len(lines) > 1 {
			goBinDir = filepath.Join(strings.SplitN(strings.TrimSpace(lines[1]), string(filepath.ListSeparator), 2)[0], "bin")
		}
	})
	return goBinDir
}

// findBinary looks in PATH, then in dirs; a missing binary fails the test.
func findBinary(t testing.TB, name string, dirs ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Fatalf("testservers: %s not found in PATH or %v: run ./scripts/test-deps.sh", name, dirs)
	return ""
}

// logTail returns the last n lines of a log file, for failure messages.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// waitReady polls ready every 50 ms until it succeeds, the process exits or
// timeout passes; the error carries the last failure.
func waitReady(p *proc, timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if last = ready(); last == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("exited before it was ready (%v)", last)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %v", timeout, last)
		}
		select {
		case <-p.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// server is the current process of a server that a test stops, kills,
// freezes and starts again; the server types embed it.
type server struct {
	name string // for failures: "ngircd"
	mu   sync.Mutex
	p    *proc
}

func (s *server) set(p *proc) {
	s.mu.Lock()
	s.p = p
	s.mu.Unlock()
}

func (s *server) current() *proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p
}

func (s *server) exited() bool {
	p := s.current()
	return p == nil || p.exited()
}

// Pid is the server's current process id, 0 when it is not running:
// benchmarks read its CPU time from /proc.
func (s *server) Pid() int {
	if p := s.current(); p != nil && !p.exited() {
		return p.cmd.Process.Pid
	}
	return 0
}

// Stop ends the server with SIGTERM (SIGKILL after a grace period).
func (s *server) Stop() {
	if p := s.current(); p != nil {
		p.stop()
	}
}

// Kill ends the server with SIGKILL, as a crash would.
func (s *server) Kill() {
	if p := s.current(); p != nil {
		p.kill()
	}
}

// Freeze stops the server with SIGSTOP, as a hung host would: its
// connections stay open, but it reads and answers nothing. Thaw or Kill
// ends the freeze (Stop would wait out its grace period).
func (s *server) Freeze(t testing.TB) {
	t.Helper()
	s.signal(t, "freeze", signalStop)
}

// Thaw resumes a frozen server with SIGCONT.
func (s *server) Thaw(t testing.TB) {
	t.Helper()
	s.signal(t, "thaw", signalCont)
}

func (s *server) signal(t testing.TB, what string, send func(*os.Process) error) {
	t.Helper()
	p := s.current()
	if p == nil || p.exited() {
		t.Fatalf("testservers: %s %s: not running", s.name, what)
	}
	if err := send(p.cmd.Process); err != nil {
		t.Fatalf("testservers: %s %s: %v", s.name, what, err)
	}
}
