package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listen is a service manager's notification socket, as systemd makes it.
func listen(t *testing.T) (string, *net.UnixConn) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return path, conn
}

func recv(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotifications(t *testing.T) {
	path, conn := listen(t)
	t.Setenv("NOTIFY_SOCKET", path)
	n, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if !n.Enabled() {
		t.Fatal("not enabled with NOTIFY_SOCKET set")
	}
	n.Ready("connectors: phone connected,\nmatrix connecting")
	if got := recv(t, conn); got != "READY=1\nSTATUS=connectors: phone connected, matrix connecting\nMAINPID="+strconv.Itoa(os.Getpid()) {
		t.Errorf("ready sent %q", got)
	}
	n.Status("reloading")
	if got := recv(t, conn); got != "STATUS=reloading" {
		t.Errorf("status sent %q", got)
	}
	n.Reloading()
	if got := recv(t, conn); !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") || strings.HasSuffix(got, "=0") {
		t.Errorf("reloading sent %q, want a monotonic time", got)
	}
	n.Watchdog()
	if got := recv(t, conn); got != "WATCHDOG=1" {
		t.Errorf("watchdog sent %q", got)
	}
	n.Stopping("stopping")
	if got := recv(t, conn); got != "STOPPING=1\nSTATUS=stopping" {
		t.Errorf("stopping sent %q", got)
	}
}

func TestWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n, err := New()
	if err != nil || n.Enabled() {
		t.Fatalf("New without NOTIFY_SOCKET = enabled %v, %v", n.Enabled(), err)
	}
	if err := n.Ready("x"); err != nil {
		t.Errorf("Ready without systemd: %v", err)
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "none"))
	if _, err := New(); err == nil || !strings.Contains(err.Error(), "NOTIFY_SOCKET") {
		t.Errorf("a socket that does not exist: %v", err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
		on, bad   bool
	}{
		{"", "", 0, false, false},
		{"30000000", "", 15 * time.Second, true, false},
		{"30000000", strconv.Itoa(os.Getpid()), 15 * time.Second, true, false},
		{"30000000", "1", 0, false, false}, // another process's
		{"soon", "", 0, false, true},
		{"-5", "", 0, false, true},
	} {
		t.Setenv("WATCHDOG_USEC", c.usec)
		t.Setenv("WATCHDOG_PID", c.pid)
		got, on, err := WatchdogInterval()
		if got != c.want || on != c.on || (err != nil) != c.bad {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v, %v, %v", c.usec, c.pid, got, on, err)
		}
	}
}
