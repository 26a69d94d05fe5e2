// Package daemontest runs the real phonebridge binary in tests: it builds
// it once, starts it on a config, waits for it to be ready, and stops or
// kills it by pid, checking that a stop is clean.
package daemontest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/internal/testservers"
)

// builds holds one build of cmd/phonebridge per set of build tags, made
// at most once per test process.
var builds struct {
	mu sync.Mutex
	by map[string]*build
}

type build struct {
	once sync.Once
	path string
	err  error
}

// Binary builds cmd/phonebridge once per test process and returns its path.
// With PHONEBRIDGE_TEST_RACE=1 the binary is built with the race detector.
func Binary(t testing.TB) string {
	t.Helper()
	return BinaryWithTags(t)
}

// BinaryWithTags is Binary built with these build tags (-tags fakewa
// makes a binary that talks to internal/fakewa instead of WhatsApp); each
// set of tags is built once per test process.
func BinaryWithTags(t testing.TB, tags ...string) string {
	t.Helper()
	key := strings.Join(tags, ",")
	builds.mu.Lock()
	if builds.by == nil {
		builds.by = map[string]*build{}
	}
	b := builds.by[key]
	if b == nil {
		b = &build{}
		builds.by[key] = b
	}
	builds.mu.Unlock()
	b.once.Do(func() { b.path, b.err = buildBinary(key) })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// buildBinary runs go build on cmd/phonebridge with the comma-separated
// tags into a new temporary directory.
func buildBinary(tags string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	pattern := "phonebridge-bin-"
	if tags != "" {
		pattern = "phonebridge-" + strings.ReplaceAll(tags, ",", "-") + "-bin-"
	}
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "phonebridge")
	args := []string{"build", "-o", path}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	if os.Getenv("PHONEBRIDGE_TEST_RACE") == "1" {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/phonebridge")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		if tags != "" {
			return "", fmt.Errorf("go build -tags %s: %v\n%s", tags, err, out)
		}
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return path, nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the phonebridge module")
	}
	return filepath.Dir(mod), nil
}

// FreePort returns a loopback TCP port nothing listens on right now.
func FreePort(t testing.TB) int { return testservers.FreePort(t) }

// Daemon is one running phonebridge process.
type Daemon struct {
	t    testing.TB
	cmd  *exec.Cmd
	logs *SyncBuffer
	done chan struct{}
	err  error // the process's exit, once done is closed
}

// ReadyLine is what the daemon logs once every connector has started.
const ReadyLine = "phonebridge is running"

// Start runs the binary with args (e.g. "run", "-c", cfg) and waits until
// it logs ReadyLine. It fails the test if the process exits first. The
// process is killed at cleanup if the test left it running.
func Start(t testing.TB, bin string, args ...string) *Daemon {
	t.Helper()
	return StartEnv(t, nil, bin, args...)
}

// StartEnv is Start with env ("KEY=value") added to the process's
// environment.
func StartEnv(t testing.TB, env []string, bin string, args ...string) *Daemon {
	t.Helper()
	d := &Daemon{t: t, logs: &SyncBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(bin, args...)
	if env != nil {
		d.cmd.Env = append(os.Environ(), env...)
	}
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stdout = d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			d.logs.Write([]byte(line + "\n"))
			if !signalled && strings.Contains(line, ReadyLine) {
				signalled = true
				close(ready)
			}
		}
		io.Copy(d.logs, stderr)
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			d.cmd.Process.Kill()
			<-d.done
		}
	})
	select {
	case <-ready:
		return d
	case <-d.done:
		t.Fatalf("phonebridge exited before it was ready (%v):\n%s", d.err, d.logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("phonebridge not ready after 60s:\n%s", d.logs.String())
	}
	return nil
}

// Pid is the process id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Logs is everything the process wrote so far.
func (d *Daemon) Logs() string { return d.logs.String() }

// Stop sends SIGTERM and requires a clean exit (status 0) within limit;
// it returns how long the stop took.
func (d *Daemon) Stop(limit time.Duration) time.Duration {
	d.t.Helper()
	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		d.t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-d.done:
	case <-time.After(limit):
		d.cmd.Process.Kill()
		<-d.done
		d.t.Fatalf("phonebridge did not stop within %v of SIGTERM:\n%s", limit, d.Logs())
	}
	took := time.Since(start)
	if d.err != nil {
		d.t.Fatalf("phonebridge exited with %v after SIGTERM:\n%s", d.err, d.Logs())
	}
	return took
}

// Signal sends sig to the process.
func (d *Daemon) Signal(sig os.Signal) {
	d.t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatalf("signal %v: %v", sig, err)
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (d *Daemon) Kill() {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		d.t.Fatalf("SIGKILL: %v", err)
	}
	<-d.done
}

// Exited reports whether the process has ended, and how.
func (d *Daemon) Exited() (bool, error) {
	select {
	case <-d.done:
		return true, d.err
	default:
		return false, nil
	}
}

// RunCommand runs the binary to completion (a CLI subcommand) and returns
// its stdout, stderr and exit code.
func RunCommand(t testing.TB, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("run %s %v: %v", bin, args, err)
	}
	return o.String(), e.String(), code
}

// SyncBuffer is a bytes.Buffer that a process's output and a test may
// use at once.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
