// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)) for a Type=notify unit: READY=1 once the daemon serves,
// STATUS= lines for `systemctl status`, WATCHDOG=1 pings, STOPPING=1. It is
// written directly, as the protocol is one datagram per message on the
// unix socket named by $NOTIFY_SOCKET; without that variable every call is
// a no-op, so the daemon runs the same outside systemd.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Notifier sends notifications to the service manager.
type Notifier struct {
	mu   sync.Mutex
	conn *net.UnixConn // nil: not under systemd
}

// New connects to $NOTIFY_SOCKET ("@name" is an abstract socket). Without
// it, the Notifier does nothing.
func New() (*Notifier, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return &Notifier{}, nil
	}
	addr := &net.UnixAddr{Name: path, Net: "unixgram"}
	if strings.HasPrefix(path, "@") {
		addr.Name = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return nil, fmt.Errorf("connect to systemd's NOTIFY_SOCKET %s: %w", path, err)
	}
	return &Notifier{conn: conn}, nil
}

// Enabled reports whether a service manager listens.
func (n *Notifier) Enabled() bool { return n != nil && n.conn != nil }

// send writes one notification: newline-separated KEY=VALUE lines.
func (n *Notifier) send(lines ...string) error {
	if !n.Enabled() {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	_, err := n.conn.Write([]byte(strings.Join(lines, "\n")))
	return err
}

// Ready says the daemon serves, with a status line.
func (n *Notifier) Ready(status string) error {
	return n.send("READY=1", "STATUS="+oneLine(status), "MAINPID="+strconv.Itoa(os.Getpid()))
}

// Status sets the line `systemctl status` shows.
func (n *Notifier) Status(status string) error { return n.send("STATUS=" + oneLine(status)) }

// Reloading says a reload began; Ready ends it.
func (n *Notifier) Reloading() error {
	return n.send("RELOADING=1", "MONOTONIC_USEC="+strconv.FormatInt(monotonicUsec(), 10))
}

// Stopping says the daemon is shutting down.
func (n *Notifier) Stopping(status string) error {
	return n.send("STOPPING=1", "STATUS="+oneLine(status))
}

// Watchdog is one keep-alive ping.
func (n *Notifier) Watchdog() error { return n.send("WATCHDOG=1") }

// Close releases the socket.
func (n *Notifier) Close() error {
	if !n.Enabled() {
		return nil
	}
	return n.conn.Close()
}

// WatchdogInterval is how often to ping: half of $WATCHDOG_USEC, as
// sd_watchdog_enabled(3) advises, when the watchdog is on for this process.
func WatchdogInterval() (time.Duration, bool, error) {
	usec := os.Getenv("WATCHDOG_USEC")
	if usec == "" {
		return 0, false, nil
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0, false, nil // meant for another process
	}
	n, err := strconv.ParseInt(usec, 10, 64)
	if err != nil || n <= 0 {
		return 0, false, errors.New("WATCHDOG_USEC is not a positive number of microseconds")
	}
	return time.Duration(n) * time.Microsecond / 2, true, nil
}

// oneLine keeps a status on one line: a newline would start another
// notification field.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
