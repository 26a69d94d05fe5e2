package testservers

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

const inspircdReadyTimeout = 20 * time.Second

// InspIRCdOptions configures StartInspIRCd.
type InspIRCdOptions struct {
	// Penalties keeps InspIRCd's flood penalties (fakelag, a command
	// rate); off by default so tests are not throttled.
	Penalties bool
	// NoLabeledResponse leaves out labeled-response, so a client falls
	// back to echo-message to learn a line was taken.
	NoLabeledResponse bool
}

// InspIRCd is a running InspIRCd 3 server on a loopback port. Unlike
// ngIRCd it offers the IRCv3 capabilities a client uses to learn that a
// line was taken: echo-message and labeled-response (with batch,
// message-tags, server-time and msgid).
type InspIRCd struct {
	dir  string
	bin  string
	port int
	opts InspIRCdOptions
	cred *syscall.Credential // InspIRCd refuses to run as root
	server
}

// StartInspIRCd writes a config into a directory of its own, starts
// InspIRCd in the foreground (as the irc user when the tests run as
// root) and waits until a client can register. It is stopped in
// t.Cleanup.
func StartInspIRCd(t testing.TB, opts InspIRCdOptions) *InspIRCd {
	t.Helper()
	s := &InspIRCd{bin: findBinary(t, "inspircd", "/usr/sbin"), opts: opts, server: server{name: "inspircd"}}
	// Not t.TempDir: its parent is private to this user, and the server,
	// as irc, writes its log and pid file here.
	dir, err := os.MkdirTemp("", "inspircd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s.dir = dir
	if os.Geteuid() == 0 {
		u, err := user.Lookup("irc")
		if err != nil {
			t.Fatalf("testservers: InspIRCd refuses to run as root and there is no irc user to run it as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(s.Stop)
	// The free port can be taken before InspIRCd binds it: one retry.
	for try := 0; ; try++ {
		s.port = FreePort(t)
		if err := s.writeConfig(); err != nil {
			t.Fatal(err)
		}
		err := s.start()
		if err == nil {
			return s
		}
		if try == 1 || !s.exited() {
			t.Fatalf("testservers: inspircd on port %d: %v\nlog tail:\n%s\n%s", s.port, err, logTail(s.logPath(), 40), logTail(filepath.Join(s.dir, "ircd.log"), 20))
		}
	}
}

func (s *InspIRCd) confPath() string { return filepath.Join(s.dir, "inspircd.conf") }
func (s *InspIRCd) logPath() string  { return filepath.Join(s.dir, "inspircd.out") }

func (s *InspIRCd) writeConfig() error {
	fakelag, commandrate := "off", "100000"
	labeled := "<module name=\"ircv3_labeledresponse\">\n"
	if s.opts.NoLabeledResponse {
		labeled = ""
	}
	if s.opts.Penalties {
		fakelag, commandrate = "on", "1000"
	}
	conf := fmt.Sprintf(`<server name="irc.phonebridge.test" description="phonebridge test server" network="Test">
<admin name="phonebridge tests" nick="admin" email="tests@phonebridge.test">
<bind address="127.0.0.1" port="%[1]d" type="clients">
<connect allow="127.0.0.1" maxconnwarn="off" localmax="1000" globalmax="1000" limit="5000" threshold="1000" commandrate="%[3]s" fakelag="%[2]s" recvq="65536" sendq="1048576" pingfreq="120">
<pid file="%[4]s/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="%[4]s/ircd.log">
<options>
<security hidebans="no">
<performance>
<dns timeout="1">
<module name="cap">
<module name="ircv3">
<module name="ircv3_echomessage">
%[5]s<module name="ircv3_batch">
<module name="ircv3_servertime">
<module name="ircv3_msgid">
<module name="ircv3_ctctags">
`, s.port, fakelag, commandrate, s.dir, labeled)
	if err := os.WriteFile(s.confPath(), []byte(conf), 0o644); err != nil {
		return err
	}
	if s.cred != nil {
		return os.Chown(s.confPath(), int(s.cred.Uid), int(s.cred.Gid))
	}
	return nil
}

func (s *InspIRCd) start() error {
	p, err := startProcAs(s.cred, s.dir, s.logPath(), s.bin, "--nofork", "--config", s.confPath())
	if err != nil {
		return err
	}
	s.set(p)
	probe := 0
	return waitReady(p, inspircdReadyTimeout, func() error {
		probe++
		return ircProbe(s.Addr(), fmt.Sprintf("probe%d", probe))
	})
}

// Addr is the server's host:port.
func (s *InspIRCd) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// Restart stops the server if it still runs and starts it again on the
// same port.
func (s *InspIRCd) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		t.Fatalf("testservers: inspircd restart on port %d: %v\nlog tail:\n%s", s.port, err, logTail(s.logPath(), 40))
	}
}

// IRCServer is a running IRC server of any kind here.
type IRCServer interface {
	Addr() string
	Stop()
	Kill()
	Restart(t testing.TB)
	Freeze(t testing.TB)
	Thaw(t testing.TB)
}

// IRCServerKind is one IRC server a test can run on.
type IRCServerKind struct {
	Name string
	// Confirms is how a client learns there that the server took a line:
	// "labeled-response", "echo-message", or "" (neither: a PING barrier).
	Confirms string
	Start    func(t testing.TB, penalties bool) IRCServer
}

// IRCServerKinds are the servers IRC tests run on, one per way a line is
// confirmed: ngIRCd (a PING barrier), InspIRCd (labeled-response) and
// InspIRCd without labeled-response (echo-message).
func IRCServerKinds() []IRCServerKind {
	return []IRCServerKind{
		{Name: "ngircd", Start: func(t testing.TB, penalties bool) IRCServer {
			return StartNgircd(t, NgircdOptions{Penalties: penalties})
		}},
		{Name: "inspircd", Confirms: "labeled-response", Start: func(t testing.TB, penalties bool) IRCServer {
			return StartInspIRCd(t, InspIRCdOptions{Penalties: penalties})
		}},
		{Name: "inspircd-echo", Confirms: "echo-message", Start: func(t testing.TB, penalties bool) IRCServer {
			return StartInspIRCd(t, InspIRCdOptions{Penalties: penalties, NoLabeledResponse: true})
		}},
	}
}
