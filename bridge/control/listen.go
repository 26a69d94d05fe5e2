package control

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// maxSocketPath is the longest path bind(2) takes for a unix socket
// (sun_path is 108 bytes with its NUL).
const maxSocketPath = 107

// listenSocket creates the control socket at path with mode 0600 and holds
// path+".lock" for the socket's life.
//
// The lock makes check-then-replace safe against a second daemon starting
// at the same moment; the dial check still catches a daemon that does not
// take it. The socket is bound inside a fresh 0700 directory, chmodded
// there and only then renamed into place: nobody but us can reach it
// before it is 0600, and no process-wide umask is touched (other goroutines
// create files meanwhile). The rename also replaces a stale socket
// atomically.
func listenSocket(path string) (*net.UnixListener, os.FileInfo, *os.File, error) {
	if len(path) > maxSocketPath {
		return nil, nil, nil, fmt.Errorf("the control socket path %s is %d bytes, over the %d unix sockets allow; use a shorter state_dir", path, len(path), maxSocketPath)
	}
	dir := filepath.Dir(path)
	running := fmt.Errorf("another phonebridge is running with this state_dir (%s)", dir)

	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("cannot open the control socket's lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, nil, nil, running
		}
		return nil, nil, nil, fmt.Errorf("cannot lock %s: %w", lock.Name(), err)
	}
	fail := func(err error) (*net.UnixListener, os.FileInfo, *os.File, error) {
		lock.Close() // releases the lock
		return nil, nil, nil, err
	}

	if err := checkStale(path, running); err != nil {
		return fail(err)
	}

	tmpDir, err := os.MkdirTemp(dir, ".c") // 0700
	if err != nil {
		return fail(fmt.Errorf("cannot create the control socket in %s: %w", dir, err))
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	if len(tmp) > maxSocketPath {
		return fail(fmt.Errorf("the state_dir %s is too long for a unix socket in it; use a shorter one", dir))
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return fail(fmt.Errorf("cannot create the control socket: %w", err))
	}
	// The listener would unlink its bind name, which is gone after the
	// rename; Close removes the real one, if it is still ours.
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return fail(fmt.Errorf("cannot restrict the control socket: %w", err))
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return fail(fmt.Errorf("cannot put the control socket at %s: %w", path, err))
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return fail(fmt.Errorf("cannot check the control socket: %w", err))
	}
	if fi.Mode().Perm() != 0o600 {
		ln.Close()
		os.Remove(path)
		return fail(fmt.Errorf("the control socket %s has mode %v, not 0600", path, fi.Mode().Perm()))
	}
	return ln, fi, lock, nil
}

// checkStale fails when path is a socket another process listens on, or
// is not a socket at all; a socket nobody listens on is left for the
// rename to replace.
func checkStale(path string, running error) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot check the control socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; move it away", path)
	}
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err == nil {
		c.Close()
		return running
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil // stale: its daemon died without removing it
	}
	return fmt.Errorf("cannot check the control socket %s: %w", path, err)
}

// removeSocket removes path if it is still the socket we created: after a
// slow shutdown another daemon may already have put its own there.
func removeSocket(path string, ours os.FileInfo) {
	if fi, err := os.Lstat(path); err == nil && os.SameFile(fi, ours) {
		os.Remove(path)
	}
}
