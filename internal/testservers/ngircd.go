package testservers

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const ngircdReadyTimeout = 20 * time.Second

// NgircdMotd is the message of the day the test server sends.
const NgircdMotd = "phonebridge test server"

// NgircdOptions configures StartNgircd.
type NgircdOptions struct {
	// Penalties keeps ngIRCd's own flood penalties (about a line a second
	// after a short burst); off by default so tests are not throttled.
	Penalties bool
}

// Ngircd is a running ngIRCd server on a loopback port.
type Ngircd struct {
	dir  string
	bin  string
	port int
	opts NgircdOptions
	server
}

// StartNgircd writes a config into a temp dir, starts ngIRCd in the
// foreground and waits until a client can register. It is stopped in
// t.Cleanup.
func StartNgircd(t testing.TB, opts NgircdOptions) *Ngircd {
	t.Helper()
	n := &Ngircd{
		dir:    t.TempDir(),
		bin:    findBinary(t, "ngircd", "/usr/sbin"),
		opts:   opts,
		server: server{name: "ngircd"},
	}
	t.Cleanup(n.Stop)
	// The free port can be taken before ngIRCd binds it: one retry.
	for try := 0; ; try++ {
		n.port = FreePort(t)
		if err := n.writeConfig(); err != nil {
			t.Fatal(err)
		}
		err := n.start()
		if err == nil {
			return n
		}
		if try == 1 || !n.exited() {
			t.Fatalf("testservers: ngircd on port %d: %v\nlog tail:\n%s", n.port, err, logTail(n.logPath(), 40))
		}
	}
}

func (n *Ngircd) confPath() string { return filepath.Join(n.dir, "ngircd.conf") }
func (n *Ngircd) logPath() string  { return filepath.Join(n.dir, "ngircd.log") }

func (n *Ngircd) writeConfig() error {
	penalty := "MaxPenaltyTime = 0"
	if n.opts.Penalties {
		penalty = "; MaxPenaltyTime left at its default"
	}
	conf := fmt.Sprintf(`[Global]
Name = irc.phonebridge.test
Info = phonebridge test server
Listen = 127.0.0.1
Ports = %d
MotdPhrase = %s
AdminInfo1 = phonebridge tests
AdminInfo2 = loopback only
AdminEMail = tests@phonebridge.test
; No pid file: run as root, ngIRCd drops to "nobody", which cannot write
; into the test's temp dir, and the test knows the pid anyway.
PidFile =

[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 30
%s
PingRate = 30
PingTimeout = 120
PongTimeout = 20

[Options]
DNS = no
Ident = no
PAM = no
RequireAuthPing = no
`, n.port, NgircdMotd, penalty)
	return os.WriteFile(n.confPath(), []byte(conf), 0o600)
}

func (n *Ngircd) start() error {
	p, err := startProc(n.dir, n.logPath(), n.bin, "-n", "-f", n.confPath())
	if err != nil {
		return err
	}
	n.set(p)
	probe := 0
	return waitReady(p, ngircdReadyTimeout, func() error {
		probe++
		return ircProbe(n.Addr(), fmt.Sprintf("probe%d", probe))
	})
}

// ircProbe connects and registers; it succeeds on numeric 001 (welcome).
func ircProbe(addr, nick string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(c, "NICK %s\r\nUSER %s 0 * :readiness probe\r\n", nick, nick); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("no welcome: %w", err)
		}
		if f := strings.Fields(line); len(f) >= 2 && f[1] == "001" {
			_, _ = fmt.Fprintf(c, "QUIT :ready\r\n")
			return nil
		}
	}
}

// Addr is the server's host:port.
func (n *Ngircd) Addr() string { return fmt.Sprintf("127.0.0.1:%d", n.port) }

// Restart stops the server if it still runs and starts it again on the
// same port.
func (n *Ngircd) Restart(t testing.TB) {
	t.Helper()
	n.Stop()
	if err := n.start(); err != nil {
		t.Fatalf("testservers: ngircd restart on port %d: %v\nlog tail:\n%s", n.port, err, logTail(n.logPath(), 40))
	}
}
