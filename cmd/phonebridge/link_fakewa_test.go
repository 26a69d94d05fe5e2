package main

// Linking as a user does it, through the real binary built with -tags
// fakewa against internal/fakewa: the code the command prints is read back
// by an independent decoder (internal/qrscan, gozxing) from the terminal's
// half blocks, and a fake phone scans what it decoded.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/types"
	"golang.org/x/sys/unix"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/fakewa"
	"github.com/phonebridge/phonebridge/internal/qrscan"
	"github.com/phonebridge/phonebridge/internal/testservers"
)

// lkWait bounds each wait of these tests that is not WhatsApp's own
// schedule (20 s a code).
const lkWait = 60 * time.Second

// lkWorld is a fake WhatsApp with Ann (whose account the link takes)
// and Bob, and a config with the whatsapp connector "phone" routed to an
// API connector, as README's example.
type lkWorld struct {
	srv      *fakewa.Server
	ann, bob *fakewa.Phone
	env      []string // the fakewa variables
	dir      string   // the config's directory
	cfg      string   // the config's path
	apiAddr  string
}

// newLKWorld starts the fake server; extra is added to the config's
// top level (e.g. a web: section), connectors to its connectors.
func newLKWorld(t *testing.T, opts fakewa.Options, connectors, extra string) *lkWorld {
	t.Helper()
	if os.Getenv("PHONEBRIDGE_TEST_LOG") != "" {
		opts.Logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	}
	srv, err := fakewa.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	// Short enough for the control socket.
	dir, err := os.MkdirTemp("", "pbl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	env, err := srv.Env(dir)
	if err != nil {
		t.Fatal(err)
	}
	w := &lkWorld{srv: srv, env: env, dir: dir, cfg: filepath.Join(dir, "phonebridge.yaml"),
		apiAddr: fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t))}
	w.ann = srv.NewPhone("15551234567", "100000000000001", "Ann")
	w.bob = srv.NewPhone("15550002222", "100000000000002", "Bob")
	// Ann's name is in her phone's app state, which a linked device syncs.
	if err := w.ann.SetPushName(t.Context(), "Ann"); err != nil {
		t.Fatal(err)
	}
	y := fmt.Sprintf(`state_dir: ./state
delivery:
  retry_min: 50ms
  retry_max: 1s
connectors:
  phone:
    type: whatsapp
  api:
    type: api
    listen: %s
    token: %s
%sroutes:
  - name: whatsapp
    endpoints:
      - {connector: phone, chats: all}
      - {connector: api, chats: all}
%s`, w.apiAddr, daemontest.Token, connectors, extra)
	if err := os.WriteFile(w.cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

// start runs the daemon on the world's config.
func (w *lkWorld) start(t *testing.T) *daemontest.Daemon {
	t.Helper()
	return daemontest.StartEnv(t, w.env, fakewaBinary(t), "run", "-c", w.cfg)
}

// links runs `phonebridge links` and returns its output.
func (w *lkWorld) links(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(fakewaBinary(t), "links", "-c", w.cfg)
	cmd.Env = append(os.Environ(), w.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("phonebridge links: %v\n%s", err, out)
	}
	return string(out)
}

// relays checks that a message Bob sends Ann reaches the API connector.
func (w *lkWorld) relays(t *testing.T, text string) {
	t.Helper()
	c, err := daemontest.Dial(w.apiAddr, daemontest.Token)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	chat := w.bob.PN.String()
	if err := c.Subscribe(chat, -1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), lkWait)
	defer cancel()
	if _, err := w.bob.SendText(ctx, w.ann.PN, text); err != nil {
		t.Fatalf("Bob's message: %v", err)
	}
	for {
		select {
		case f := <-c.Events:
			if f.Event != nil && f.Event.Text == text {
				if f.Event.Sender == nil || f.Event.Sender.Name != "Bob" {
					t.Errorf("Bob's message came from %+v", f.Event.Sender)
				}
				return
			}
		case <-c.Closed:
			t.Fatalf("the API connection closed: %v", c.Err())
		case <-ctx.Done():
			t.Fatalf("Bob's message %q did not reach the API connector in %v", text, lkWait)
		}
	}
}

// lkCLI is one run of `phonebridge link`, its stdout on a pseudo-terminal
// or a pipe, its stderr on a pipe.
type lkCLI struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    daemontest.SyncBuffer
	errOut daemontest.SyncBuffer
	read   chan struct{} // closed when stdout is read to its end
	done   chan struct{}
	err    error
}

// runLink starts `phonebridge link phone -c CONFIG` with args added.
func (w *lkWorld) runLink(t *testing.T, tty bool, args ...string) *lkCLI {
	t.Helper()
	c := &lkCLI{t: t, read: make(chan struct{}), done: make(chan struct{})}
	c.cmd = exec.Command(fakewaBinary(t), append([]string{"link", "phone", "-c", w.cfg}, args...)...)
	c.cmd.Env = append(os.Environ(), w.env...)
	c.cmd.Stderr = &c.errOut
	var stdout io.ReadCloser
	if tty {
		master, slave := lkOpenPTY(t)
		c.cmd.Stdout = slave
		stdout = master
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		slave.Close() // the child holds it: reads end when it exits
	} else {
		r, err := c.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout = r
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		defer close(c.read)
		io.Copy(&c.out, stdout) // a pty's master ends with EIO
		stdout.Close()
	}()
	go func() {
		<-c.read
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			c.cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// lkOpenPTY opens a pseudo-terminal pair: what the child writes to slave,
// the test reads from master, as a terminal emulator would.
func lkOpenPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open a pseudo-terminal: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock the pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("name the pseudo-terminal: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open the pseudo-terminal's slave: %v", err)
	}
	return m, s
}

// waitOut waits until stdout satisfies ok, failing if the command exits
// first or within limit; it returns stdout.
func (c *lkCLI) waitOut(what string, limit time.Duration, ok func(out string) bool) string {
	c.t.Helper()
	deadline := time.After(limit)
	for {
		out := c.String()
		if ok(out) {
			return out
		}
		select {
		case <-c.done:
			if out := c.String(); ok(out) {
				return out
			}
			c.t.Fatalf("phonebridge link exited (%v) before %s:\nstdout:\n%s\nstderr:\n%s", c.err, what, c.String(), c.errOut.String())
		case <-deadline:
			c.t.Fatalf("no %s within %v:\nstdout:\n%s\nstderr:\n%s", what, limit, c.String(), c.errOut.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// codes waits until the output holds n QR codes that decode, the last
// one complete (its countdown under it), and returns them in order.
func (c *lkCLI) codes(n int, limit time.Duration) []string {
	c.t.Helper()
	var codes []string
	var stuck string // output complete by its look that did not scan
	var stuckSince time.Time
	c.waitOut(fmt.Sprintf("%d complete QR codes that scan", n), limit, func(out string) bool {
		shown := lkScreen(out)
		// A code may be read while it is being drawn: only a code with its
		// countdown under it is complete.
		complete := strings.HasSuffix(out, "\n") && len(shown) > 0 &&
			(lkTTYCountdown.MatchString(shown[len(shown)-1]) || lkPlainCountdown.MatchString(shown[len(shown)-1]))
		all, err := qrscan.AllFromTerminal(out)
		switch {
		case err != nil && complete:
			// A redraw in progress can leave the old countdown under a
			// half-drawn code (seen in CI under load): fail only if the
			// output stays so for 2 s.
			if out != stuck {
				stuck, stuckSince = out, time.Now()
			} else if time.Since(stuckSince) > 2*time.Second {
				c.t.Fatalf("the printed code does not scan: %v\n%s", err, out)
			}
			return false
		case err != nil:
			return false // drawn in part
		}
		if complete && len(all) >= n {
			codes = all[:n]
			return true
		}
		return false
	})
	return codes
}

// exit waits for the command to end and returns its exit code.
func (c *lkCLI) exit(limit time.Duration) int {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(limit):
		c.cmd.Process.Kill()
		<-c.done
		c.t.Fatalf("phonebridge link did not end within %v:\nstdout:\n%s\nstderr:\n%s", limit, c.String(), c.errOut.String())
	}
	return c.cmd.ProcessState.ExitCode()
}

// String is stdout so far, its line ends as written: a terminal's
// CR LF (the pty's output processing) read as LF.
func (c *lkCLI) String() string { return strings.ReplaceAll(c.out.String(), "\r\n", "\n") }

// lastErrLine is the command's last line on stderr.
func (c *lkCLI) lastErrLine() string {
	lines := strings.Split(strings.TrimRight(c.errOut.String(), "\n"), "\n")
	return lines[len(lines)-1]
}

// lkScan has p scan code and returns the device it linked.
func lkScan(t *testing.T, p *fakewa.Phone, code string) types.JID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), lkWait)
	defer cancel()
	dev, err := p.ScanQR(ctx, code)
	if err != nil {
		t.Fatalf("the phone's scan of %.30q…: %v", code, err)
	}
	return dev
}

// lkScreen is what a terminal shows after the transcript out: escapes
// applied (the few the link command uses), lines as they stand.
func lkScreen(out string) []string {
	var lines []string
	row, col := 0, 0
	put := func(r rune) {
		for len(lines) <= row {
			lines = append(lines, "")
		}
		rs := []rune(lines[row])
		for len(rs) < col {
			rs = append(rs, ' ')
		}
		if col < len(rs) {
			rs[col] = r
		} else {
			rs = append(rs, r)
		}
		lines[row] = string(rs)
		col++
	}
	csi := regexp.MustCompile(`^\x1b\[(\d*)([A-Za-z])`)
	rs := []rune(out)
	for i := 0; i < len(rs); i++ {
		switch rs[i] {
		case '\r':
			col = 0
		case '\n':
			row++
			col = 0
		case '\x1b':
			m := csi.FindStringSubmatch(string(rs[i:min(i+16, len(rs))]))
			if m == nil {
				put(rs[i])
				continue
			}
			i += len([]rune(m[0])) - 1
			n := 1
			if m[1] != "" {
				fmt.Sscan(m[1], &n)
			}
			switch m[2] {
			case "A":
				row = max(row-n, 0)
			case "J", "K": // erase to the end of the screen, of the line
				if row < len(lines) {
					if m[2] == "K" && m[1] == "2" {
						lines[row] = ""
					} else {
						lines[row] = string([]rune(lines[row])[:min(col, len([]rune(lines[row])))])
					}
				}
				if m[2] == "J" && row+1 < len(lines) {
					lines = lines[:row+1]
				}
			}
		default:
			put(rs[i])
		}
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// What the README's "Link your phone" shows, as the command prints it.
const (
	lkQRSteps = "Link phonebridge to your WhatsApp account:\n" +
		"  1. Open WhatsApp on your phone.\n" +
		"  2. Go to Settings → Linked devices → Link a device.\n" +
		"  3. Point the phone at this code.\n"
	lkCodeSteps = "Link phonebridge to your WhatsApp account:\n" +
		"  1. Open WhatsApp on your phone.\n" +
		"  2. Go to Settings → Linked devices → Link a device → Link with phone number instead.\n" +
		"  3. Type this code:\n"
	// WhatsApp tells a new device its account's push name only later, by
	// app state, so the line names the number and platform alone.
	lkLinked   = "Linked phone to +15551234567 on android."
	lkRelaying = "phonebridge is relaying it now."
	lkStart    = "Start phonebridge (`phonebridge run`) to relay it."

	lkTimedOut      = "phonebridge: not linked: timed out: no phone scanned the code; try again"
	lkNoMultidevice = "phonebridge: not linked: the code was scanned by a WhatsApp without linked-device support; update WhatsApp on the phone"
	lkOutdated      = "phonebridge: not linked: WhatsApp refused this client as outdated; update phonebridge"
	lkCancelled     = "phonebridge: not linked: cancelled with Ctrl-C"
)

var (
	// The countdown under a QR code: on a terminal, redrawn each second;
	// elsewhere printed once under each code.
	lkTTYCountdown   = regexp.MustCompile(`(?m)^Waiting for the phone… this code is valid for (\d+)s; a new one replaces it\.$`)
	lkPlainCountdown = regexp.MustCompile(`(?m)^\(valid for (\d+)s; a new code follows if it expires\)$`)
	// The pairing code, indented on a line of its own.
	lkPairingCode = regexp.MustCompile(`(?m)^ {6}([0-9A-Z]{4}-[0-9A-Z]{4})$`)
)

// lkLines splits the README's text into its lines.
func lkLines(text string) []string { return strings.Split(strings.TrimSuffix(text, "\n"), "\n") }

// lkCheckLinked checks how a successful link ends: on a terminal the code is
// gone from the screen and the steps are followed by who was linked;
// elsewhere the output ends with it. running says the daemon linked.
func lkCheckLinked(t *testing.T, c *lkCLI, tty bool, steps string, running bool) {
	t.Helper()
	if code := c.exit(lkWait); code != 0 {
		t.Fatalf("phonebridge link exited with %d:\nstdout:\n%s\nstderr:\n%s", code, c.String(), c.errOut.String())
	}
	relay := lkStart
	if running {
		relay = lkRelaying
	}
	out := c.String()
	if !tty {
		if !strings.HasPrefix(out, steps) || !strings.HasSuffix(out, "\n"+lkLinked+"\n"+relay+"\n") || strings.Contains(out, "\x1b") {
			t.Errorf("the output does not start with the steps and end with %q, %q, or has escapes:\n%s", lkLinked, relay, out)
		}
		return
	}
	want := append(lkLines(steps), lkLinked, relay)
	if got := lkScreen(out); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the terminal shows:\n%s\nwant:\n%s\n(transcript %q)", strings.Join(got, "\n"), strings.Join(want, "\n"), out)
	}
}

// lkCheckFailed checks how a failed link ends: exit status 1 and, last on
// stderr, the README's line.
func lkCheckFailed(t *testing.T, c *lkCLI, line string) {
	t.Helper()
	if code := c.exit(lkWait); code != 1 {
		t.Errorf("phonebridge link exited with %d, want 1", code)
	}
	if got := c.lastErrLine(); got != line {
		t.Errorf("the last line on stderr is %q, want %q; stderr:\n%s", got, line, c.errOut.String())
	}
	if strings.Contains(c.String(), "Linked phone") {
		t.Errorf("a failed link printed success:\n%s", c.String())
	}
}

// waitLinks waits until `phonebridge links` prints a row that re matches.
func (w *lkWorld) waitLinks(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(lkWait)
	for {
		out := w.links(t)
		if re.MatchString(out) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("`phonebridge links` shows no row like %s within %v:\n%s", re, lkWait, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var (
	// The push name comes once the link has synced the phone's app state,
	// which the CLI linking on its own does not wait for.
	lkAnnConnected = regexp.MustCompile(`(?m)^phone +15551234567@s\.whatsapp\.net +Ann +connected +\d+s ago *$`)
	lkAnnStopped   = regexp.MustCompile(`(?m)^phone +15551234567@s\.whatsapp\.net +- +stopped +\d+s ago *$`)
	lkUnlinked     = regexp.MustCompile("(?m)^phone +- +- +unlinked +\\d+s ago +not linked: run `phonebridge link phone` *$")
)

// TestLinkByQRFromTheCLI: `phonebridge link phone` with the daemon
// running (over the control socket) and without (in-process), on a
// terminal and into a pipe: the printed code scans, the phone links, the
// command says so, and the link relays.
func TestLinkByQRFromTheCLI(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name               string
		daemon, tty, light bool
	}{
		// The other two ways are TestLinkCodeRotatesAndTimesOut's.
		{"no daemon, terminal", false, true, false},
		{"daemon, pipe, --light", true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newLKWorld(t, fakewa.Options{}, "", "")
			if tc.daemon {
				w.start(t)
				w.waitLinks(t, lkUnlinked)
			}
			var args []string
			if tc.light {
				args = append(args, "--light")
			}
			c := w.runLink(t, tc.tty, args...)
			code := c.codes(1, lkWait)[0]
			out := c.String()
			// WhatsApp shows its first code for 60 s.
			if n := lkCountdown(t, out, tc.tty); n > 60 || n < 55 {
				t.Errorf("the first code's countdown starts at %ds, want 60s:\n%s", n, out)
			}
			if !strings.HasPrefix(out, lkQRSteps) {
				t.Errorf("the output does not start with the steps:\n%s", out)
			}
			lkScan(t, w.ann, code)
			lkCheckLinked(t, c, tc.tty, lkQRSteps, tc.daemon)

			if !tc.daemon {
				w.waitLinks(t, lkAnnStopped)
				w.start(t) // relays without a new code
			}
			w.waitLinks(t, lkAnnConnected)
			w.relays(t, "hello Ann, from Bob")
		})
	}
}

// TestLinkCodeRotatesAndTimesOut: WhatsApp replaces the code (here after
// 20 s, its usual pace after the first); on a terminal the new one is
// drawn over the old and the countdown runs. The old code is dead once
// WhatsApp expires it; the new one links. When nobody scans and the codes
// run out (here one code, 20 s), the command ends with the README's line
// and status 1, with or without the daemon; run again, it links.
//
// A pairing code nobody types ends the same way, no sooner than its
// countdown said. One test, so that WhatsApp's clock runs for all at once.
func TestLinkCodeRotatesAndTimesOut(t *testing.T) {
	t.Parallel()
	rot := newLKWorld(t, fakewa.Options{QRRefs: 2}, "", "")
	rot.start(t)
	alone := newLKWorld(t, fakewa.Options{QRRefs: 1}, "", "")
	withDaemon := newLKWorld(t, fakewa.Options{QRRefs: 1}, "", "")
	withDaemon.start(t)
	withDaemon.waitLinks(t, lkUnlinked)
	byCode := newLKWorld(t, fakewa.Options{QRRefs: 1}, "", "")
	rotating := rot.runLink(t, true)
	start := time.Now()
	timing := []*lkCLI{alone.runLink(t, false), withDaemon.runLink(t, true)}
	coding := byCode.runLink(t, false, "--phone", "+1 555 123 4567")
	coding.waitOut("a pairing code", lkWait, func(out string) bool { return strings.Contains(out, "valid for") })
	codeShown := time.Now()
	m := regexp.MustCompile(`(?m)^\(valid for (\d+)s\)$`).FindStringSubmatch(coding.String())
	if m == nil {
		t.Fatalf("no countdown under the pairing code:\n%s", coding.String())
	}
	codeValid, _ := strconv.Atoi(m[1])

	first := rotating.codes(1, lkWait)[0]
	// The server expires a code a few seconds after the client stops
	// showing it (fakewa: 5 s), counted from when it sent the codes,
	// which was before this.
	firstExpired := time.Now().Add(25*time.Second + 500*time.Millisecond)
	for _, c := range timing {
		c.codes(1, lkWait)
	}
	if n := lkCountdown(t, timing[0].String(), false); n > 20 || n < 15 {
		t.Errorf("the only code's countdown starts at %ds, want 20s", n)
	}

	codes := rotating.codes(2, lkWait)
	if codes[0] != first || codes[1] == first {
		t.Fatalf("the codes are %.30q, want the first then another", codes)
	}
	out := rotating.String()
	// The countdown ran under the first code, each second in place.
	for _, s := range []string{"19", "10", "1"} {
		if !strings.Contains(out, "\x1b[1A\x1b[2KWaiting for the phone… this code is valid for "+s+"s; a new one replaces it.\n") {
			t.Errorf("the countdown under the first code did not redraw %ss:\n%q", s, out)
		}
	}
	// On screen, one code: the new one, over the old.
	shown := lkScreen(out)
	if got, err := qrscan.AllFromTerminal(strings.Join(shown, "\n")); err != nil || len(got) != 1 || got[0] != codes[1] {
		t.Errorf("the terminal shows the codes %.30q (%v), want the second alone:\n%s", got, err, strings.Join(shown, "\n"))
	}
	if last := shown[len(shown)-1]; !lkTTYCountdown.MatchString(last) {
		t.Errorf("the last line on screen is %q, not the countdown", last)
	}

	// Meanwhile the others timed out.
	for _, c := range timing {
		lkCheckFailed(t, c, lkTimedOut)
	}
	if took := time.Since(start); took < 19*time.Second {
		t.Errorf("timed out after %v, before the code's 20 s", took)
	}
	// A pairing code nobody typed: the command waits as long as it said
	// the code is good, then ends saying so.
	if code := coding.exit(lkWait); code != 1 {
		t.Errorf("linking by a code nobody typed exited with %d, want 1", code)
	}
	if waited := time.Since(codeShown); waited < time.Duration(codeValid-1)*time.Second {
		t.Errorf("the pairing code was said valid for %ds, but the command gave up after %v", codeValid, waited.Round(time.Second))
	}
	if last := coding.lastErrLine(); !strings.HasPrefix(last, "phonebridge: not linked: ") || !strings.Contains(last, "try again for a new code") {
		t.Errorf("linking by a code nobody typed ended with %q", last)
	}

	time.Sleep(time.Until(firstExpired))
	ctx, cancel := context.WithTimeout(context.Background(), lkWait)
	defer cancel()
	if _, err := rot.ann.ScanQR(ctx, first); !errors.Is(err, fakewa.ErrCodeExpired) {
		t.Fatalf("the replaced code, scanned after it expired: %v, want %v", err, fakewa.ErrCodeExpired)
	}
	lkScan(t, rot.ann, codes[1])
	lkCheckLinked(t, rotating, true, lkQRSteps, true)
	rot.waitLinks(t, lkAnnConnected)
	rot.relays(t, "after the second code")

	withDaemon.waitLinks(t, lkUnlinked)
	c := withDaemon.runLink(t, false)
	lkScan(t, withDaemon.ann, c.codes(1, lkWait)[0])
	lkCheckLinked(t, c, false, lkQRSteps, true)
	withDaemon.relays(t, "linked at the second try")
}

// lkCountdown is the seconds the first countdown in out shows; tty says
// out is a terminal's.
func lkCountdown(t *testing.T, out string, tty bool) int {
	t.Helper()
	re := lkPlainCountdown
	if tty {
		re = lkTTYCountdown
	}
	m := re.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no countdown like %s under the code:\n%s", re, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestLinkCancelledWithCtrlC: SIGINT while the code shows ends the command
// with the README's line and status 1, and leaves nothing behind: the
// next link works.
func TestLinkCancelledWithCtrlC(t *testing.T) {
	t.Parallel()
	for _, daemon := range []bool{false, true} {
		t.Run(fmt.Sprintf("daemon=%v", daemon), func(t *testing.T) {
			w := newLKWorld(t, fakewa.Options{}, "", "")
			if daemon {
				w.start(t)
				w.waitLinks(t, lkUnlinked)
			}
			c := w.runLink(t, true)
			c.codes(1, lkWait)
			if err := c.cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			lkCheckFailed(t, c, lkCancelled)
			if daemon {
				w.waitLinks(t, lkUnlinked)
			}

			c = w.runLink(t, false)
			lkScan(t, w.ann, c.codes(1, lkWait)[0])
			lkCheckLinked(t, c, false, lkQRSteps, daemon)
		})
	}
}

// TestLinkRefusedByWhatsApp: a phone whose WhatsApp has no linked devices
// scans the code, or WhatsApp refuses the client as outdated: each ends
// with the README's line and status 1, with or without the daemon.
func TestLinkRefusedByWhatsApp(t *testing.T) {
	t.Parallel()
	for _, daemon := range []bool{false, true} {
		t.Run(fmt.Sprintf("no multi-device, daemon=%v", daemon), func(t *testing.T) {
			w := newLKWorld(t, fakewa.Options{}, "", "")
			if daemon {
				w.start(t)
			}
			c := w.runLink(t, false)
			code := c.codes(1, lkWait)[0]
			w.ann.NoMultidevice = true
			ctx, cancel := context.WithTimeout(context.Background(), lkWait)
			defer cancel()
			if dev, err := w.ann.ScanQR(ctx, code); err == nil {
				t.Fatalf("a phone without multi-device linked %v", dev)
			}
			lkCheckFailed(t, c, lkNoMultidevice)
			if len(w.ann.Companions()) != 0 {
				t.Errorf("the account has companions %v", w.ann.Companions())
			}
		})
		t.Run(fmt.Sprintf("outdated, daemon=%v", daemon), func(t *testing.T) {
			w := newLKWorld(t, fakewa.Options{}, "", "")
			if daemon {
				w.start(t)
			}
			w.srv.RefuseOutdated(true)
			c := w.runLink(t, false)
			lkCheckFailed(t, c, lkOutdated)
			// The one line, not whatsmeow's own error about it before (the
			// tagged build's warning that it talks to a fake aside).
			var lines []string
			for _, l := range strings.Split(strings.TrimSpace(c.errOut.String()), "\n") {
				if !strings.Contains(l, "built for tests (-tags fakewa)") {
					lines = append(lines, l)
				}
			}
			if len(lines) != 1 {
				t.Errorf("stderr holds more than the one line:\n%s", strings.Join(lines, "\n"))
			}
			if strings.Contains(c.String(), "█") {
				t.Errorf("a code was shown though WhatsApp refused the client:\n%s", c.String())
			}
		})
	}
}

// TestLinkByPairingCodeFromTheCLI: `link phone --phone +1…` prints a code
// to type on the phone; typed, the account links.
func TestLinkByPairingCodeFromTheCLI(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		daemon, tty bool
	}{
		{"no daemon, terminal", false, true},
		{"daemon, pipe", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newLKWorld(t, fakewa.Options{}, "", "")
			if tc.daemon {
				w.start(t)
				w.waitLinks(t, lkUnlinked)
			}
			c := w.runLink(t, tc.tty, "--phone", "+1 555 123 4567")
			out := c.waitOut("a pairing code", lkWait, func(out string) bool {
				return lkPairingCode.MatchString(out) && strings.Contains(out, "valid for")
			})
			// A pairing code is good for 180 s, and never replaced. On a
			// terminal the countdown runs in place.
			countdown := regexp.MustCompile(`^\(valid for (\d+)s\)$`)
			if tc.tty {
				countdown = regexp.MustCompile(`^Waiting for the phone… this code is valid for (\d+)s\.$`)
			}
			code := lkPairingCode.FindStringSubmatch(out)[1]
			shown := lkScreen(out)
			want := append(lkLines(lkCodeSteps), "", "      "+code, "")
			if len(shown) != len(want)+1 || strings.Join(shown[:len(want)], "\n") != strings.Join(want, "\n") || !countdown.MatchString(shown[len(want)]) {
				t.Fatalf("the command shows:\n%s\nwant the steps, the code and a countdown like %s", strings.Join(shown, "\n"), countdown)
			}
			// Good while WhatsApp's pairing session lasts: 160 s with its
			// six QR codes (TestLinkCodeRotatesAndTimesOut checks the
			// countdown against how long the command waits).
			if n, _ := strconv.Atoi(countdown.FindStringSubmatch(shown[len(want)])[1]); n > 180 || n < 150 {
				t.Errorf("the pairing code's countdown starts at %ds, want WhatsApp's 160s", n)
			}
			if !tc.tty && strings.Contains(out, "\x1b") {
				t.Errorf("escapes in output that is not a terminal:\n%q", out)
			}
			ctx, cancel := context.WithTimeout(context.Background(), lkWait)
			defer cancel()
			if _, err := w.ann.EnterPairingCode(ctx, code); err != nil {
				t.Fatalf("the phone took the code %s: %v", code, err)
			}
			lkCheckLinked(t, c, tc.tty, lkCodeSteps, tc.daemon)
			if !tc.daemon {
				w.start(t)
			}
			w.waitLinks(t, lkAnnConnected)
			w.relays(t, "linked by code")
		})
	}
}

// TestLinkByPairingCodeCancelledWithCtrlC: SIGINT while a pairing code
// shows ends the command with the README's line and status 1, with or
// without the daemon. The code is dead then: typed on the phone, it links
// nothing. The next link by code works.
func TestLinkByPairingCodeCancelledWithCtrlC(t *testing.T) {
	t.Parallel()
	for _, daemon := range []bool{false, true} {
		t.Run(fmt.Sprintf("daemon=%v", daemon), func(t *testing.T) {
			w := newLKWorld(t, fakewa.Options{}, "", "")
			if daemon {
				w.start(t)
				w.waitLinks(t, lkUnlinked)
			}
			shown := func(c *lkCLI) string {
				t.Helper()
				out := c.waitOut("a pairing code", lkWait, func(out string) bool {
					return lkPairingCode.MatchString(out) && strings.Contains(out, "valid for")
				})
				return lkPairingCode.FindStringSubmatch(out)[1]
			}
			c := w.runLink(t, true, "--phone", "+1 555 123 4567")
			code := shown(c)
			if err := c.cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			lkCheckFailed(t, c, lkCancelled)
			if daemon {
				w.waitLinks(t, lkUnlinked)
			}
			ctx, cancel := context.WithTimeout(context.Background(), lkWait)
			defer cancel()
			if dev, err := w.ann.EnterPairingCode(ctx, code); err == nil {
				t.Fatalf("the cancelled code %s linked %v", code, dev)
			}
			if devs := w.ann.Companions(); len(devs) != 0 {
				t.Fatalf("after the cancel, the phone lists the linked devices %v", devs)
			}

			c = w.runLink(t, false, "--phone", "+1 555 123 4567")
			if _, err := w.ann.EnterPairingCode(ctx, shown(c)); err != nil {
				t.Fatalf("the phone took the next code: %v", err)
			}
			lkCheckLinked(t, c, false, lkCodeSteps, daemon)
		})
	}
}

// lkRoom is the README's management room on Dendrite: the daemon (its
// matrix connector in appservice mode) on an lkWorld, and the owner's
// direct chat with the bridge bot.
type lkRoom struct {
	w     *lkWorld
	d     *daemontest.Daemon
	owner *daemontest.MatrixUser
	room  id.RoomID
	// seen are the events recorded before the last command, which no
	// wait for what answers it may take.
	seen map[id.EventID]bool
}

const lkBot = id.UserID("@phonebridgebot:localhost")

// newLKRoom starts Dendrite and the daemon on a fake WhatsApp with opts,
// and opens the management room, once the bot has greeted.
func newLKRoom(t *testing.T, opts fakewa.Options) *lkRoom {
	t.Helper()
	asListen := fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t))
	const noHomeserver = "http://127.0.0.1:1"
	w := newLKWorld(t, opts, fmt.Sprintf(`  mx:
    type: matrix
    mode: appservice
    homeserver: %s
    domain: localhost
    registration: registration.yaml
    listen: %s
    owner: "@owner:localhost"
`, noHomeserver, asListen), "")
	// The registration first, as an operator makes it: the homeserver
	// loads it at start.
	bin := fakewaBinary(t)
	if out, errOut, code := daemontest.RunCommand(t, bin, "matrix", "registration", "mx", "-c", w.cfg); code != 0 {
		t.Fatalf("phonebridge matrix registration: %d\n%s%s", code, out, errOut)
	}
	hs := testservers.StartDendrite(t, testservers.DendriteOptions{AppServiceFiles: []string{filepath.Join(w.dir, "registration.yaml")}})
	cfg, err := os.ReadFile(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.cfg, []byte(strings.Replace(string(cfg), noHomeserver, hs.URL(), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &lkRoom{w: w, d: w.start(t), seen: map[id.EventID]bool{}}
	r.owner = daemontest.NewMatrixUser(t, hs, "owner", "The Owner")
	dm, err := r.owner.Client.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", Invite: []id.UserID{lkBot}, IsDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	r.room = dm.RoomID
	r.notice(t, "the bot's greeting", "Hello! I am the phonebridge bot.")
	return r
}

// say sends line to the bot; what answers it is new from then on.
func (r *lkRoom) say(t *testing.T, line string) {
	t.Helper()
	for _, evt := range r.owner.Events() {
		r.seen[evt.ID] = true
	}
	if _, err := r.owner.Client.SendText(t.Context(), r.room, line); err != nil {
		t.Fatal(err)
	}
}

// fromBot matches the bot's new messages of kind in the room that match
// takes.
func (r *lkRoom) fromBot(kind event.MessageType, match func(*event.MessageEventContent) bool) func(*event.Event) bool {
	return func(evt *event.Event) bool {
		if r.seen[evt.ID] || evt.RoomID != r.room || evt.Sender != lkBot || evt.Type != event.EventMessage {
			return false
		}
		msg := evt.Content.AsMessage()
		return msg.MsgType == kind && match(msg)
	}
}

// notice waits for the bot's new notice that starts with prefix, and
// returns its body.
func (r *lkRoom) notice(t *testing.T, what, prefix string) string {
	t.Helper()
	evt := r.owner.Await(t, what, lkWait, r.fromBot(event.MsgNotice, func(m *event.MessageEventContent) bool { return strings.HasPrefix(m.Body, prefix) }))
	return evt.Content.AsMessage().Body
}

// isEdit says the message replaces another.
func isEdit(m *event.MessageEventContent) bool {
	return m.RelatesTo != nil && m.RelatesTo.Type == event.RelReplace
}

// qrImage waits for the bot's new QR image (the first, not an edit of
// it) and returns it and the code a camera reads from it.
func (r *lkRoom) qrImage(t *testing.T, limit time.Duration) (*event.Event, string) {
	t.Helper()
	img := r.owner.Await(t, "the QR image", limit, r.fromBot(event.MsgImage, func(m *event.MessageEventContent) bool { return !isEdit(m) }))
	return img, r.scanImage(t, img.Content.AsMessage())
}

// replacedQR waits for the edit that replaces the QR image img with a new
// code, and returns that code.
func (r *lkRoom) replacedQR(t *testing.T, img *event.Event, limit time.Duration) string {
	t.Helper()
	edit := r.owner.Await(t, "the QR image replaced", limit, r.fromBot(event.MsgImage, func(m *event.MessageEventContent) bool {
		return isEdit(m) && m.RelatesTo.EventID == img.ID
	}))
	m := edit.Content.AsMessage()
	if m.NewContent == nil || m.NewContent.MsgType != event.MsgImage {
		t.Fatalf("the QR image's edit carries %+v, want a new image", m.NewContent)
	}
	return r.scanImage(t, m.NewContent)
}

// scanImage downloads the image m posts, as the owner's client does, and
// reads its QR code as a camera would (qrscan).
func (r *lkRoom) scanImage(t *testing.T, m *event.MessageEventContent) string {
	t.Helper()
	uri, err := m.URL.Parse()
	if err != nil {
		t.Fatalf("the QR image's url %q: %v", m.URL, err)
	}
	png, err := r.owner.Client.DownloadBytes(t.Context(), uri)
	if err != nil {
		t.Fatal(err)
	}
	code, err := qrscan.FromImage(png)
	if err != nil {
		t.Fatalf("the posted QR image does not scan: %v", err)
	}
	return code
}

// redacted waits until the spent QR image evt is redacted.
func (r *lkRoom) redacted(t *testing.T, evt id.EventID) {
	t.Helper()
	deadline := time.Now().Add(lkWait)
	for {
		got, err := r.owner.Client.GetEvent(t.Context(), r.room, evt)
		if err == nil && len(got.Content.Raw) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the spent QR image is not redacted (%v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestLinkFromTheMatrixManagementRoom: the README's management room, as
// its owner uses it: `link` posts a QR image, which the owner's client
// downloads and a camera would read (qrscan), and the phone scans; the
// room then says linked. `unlink`, then `link +PHONE` posts a pairing
// code to type on the phone, which links again.
func TestLinkFromTheMatrixManagementRoom(t *testing.T) {
	t.Parallel()
	r := newLKRoom(t, fakewa.Options{})
	w := r.w

	r.say(t, "link")
	r.notice(t, "the link instructions", "Scan this code with WhatsApp on your phone: Settings → Linked devices → Link a device.")
	img, code := r.qrImage(t, lkWait)
	lkScan(t, w.ann, code)
	// WhatsApp tells a new device its account's push name only later.
	if got := r.notice(t, "the link's outcome", "Linked"); got != "Linked phone to +15551234567. Messages are relayed now." {
		t.Errorf("the room says %q", got)
	}
	w.waitLinks(t, lkAnnConnected)
	w.relays(t, "linked from Matrix")
	// The spent code is redacted.
	r.redacted(t, img.ID)

	r.say(t, "unlink")
	if got := r.notice(t, "the unlink's outcome", "Unlinked"); got != "Unlinked phone: the device left the phone's linked devices. Send `link phone` to link again." {
		t.Errorf("the room says %q", got)
	}
	w.waitLinks(t, regexp.MustCompile("(?m)^phone +- +- +unlinked +\\d+s ago +unlinked with `phonebridge unlink` *$"))
	if len(w.ann.Companions()) != 0 {
		t.Errorf("the phone still lists the devices %v", w.ann.Companions())
	}

	r.say(t, "link +1 555 123 4567")
	// The body is the Markdown the formatted body is rendered from.
	body := r.notice(t, "the pairing code", "Pairing code: ")
	m := regexp.MustCompile(`^Pairing code: \*\*([0-9A-Z]{4}-[0-9A-Z]{4})\*\*\n\nOn your phone: WhatsApp → Settings → Linked devices → Link a device → Link with phone number instead, then type the code\.$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("the pairing code came as %q", body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), lkWait)
	defer cancel()
	if _, err := w.ann.EnterPairingCode(ctx, m[1]); err != nil {
		t.Fatalf("the phone took the code %s: %v\ndaemon:\n%s", m[1], err, r.d.Logs())
	}
	if got := r.notice(t, "the second link's outcome", "Linked"); got != "Linked phone to +15551234567. Messages are relayed now." {
		t.Errorf("the room says %q", got)
	}
	w.waitLinks(t, lkAnnConnected)
	w.relays(t, "linked again from Matrix, by code")
}

// TestLinkOutcomesInTheMatrixManagementRoom: the ways linking from the
// management room ends, on the real client, as the room tells its owner:
// `cancel` stops it (the code is dead then); a phone without linked-device
// support that scans ends it with its reason; WhatsApp replaces the code
// (here every 20 s, two codes) by an edit of the posted image, and when
// nobody scans, linking times out. Each time the spent image is redacted
// and the link stays unlinked; after all that, a replaced code links.
func TestLinkOutcomesInTheMatrixManagementRoom(t *testing.T) {
	t.Parallel()
	r := newLKRoom(t, fakewa.Options{QRRefs: 2})
	w := r.w
	scan := func(code string) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), lkWait)
		defer cancel()
		_, err := w.ann.ScanQR(ctx, code)
		return err
	}
	linkShown := func() (*event.Event, string) {
		t.Helper()
		r.say(t, "link")
		r.notice(t, "the link instructions", "Scan this code with WhatsApp on your phone")
		return r.qrImage(t, lkWait)
	}

	// Cancel.
	img, code := linkShown()
	r.say(t, "cancel")
	if got := r.notice(t, "the cancel's outcome", "Linking"); got != "Linking cancelled." {
		t.Errorf("after cancel the room says %q, want Linking cancelled.", got)
	}
	r.redacted(t, img.ID)
	w.waitLinks(t, lkUnlinked)
	if scan(code) == nil {
		t.Fatal("the cancelled code linked")
	}

	// A WhatsApp without linked devices scans.
	img, code = linkShown()
	w.ann.NoMultidevice = true
	if scan(code) == nil {
		t.Fatal("a phone without multi-device linked")
	}
	if got, want := r.notice(t, "the outcome of the scan without multi-device", "Linking"), "Linking phone failed: the code was scanned by a WhatsApp without linked-device support; update WhatsApp on the phone"; got != want {
		t.Errorf("the room says %q, want %q", got, want)
	}
	r.redacted(t, img.ID)
	w.ann.NoMultidevice = false
	w.waitLinks(t, lkUnlinked)

	// Nobody scans: the code is replaced once by an edit, then linking
	// times out.
	img, first := linkShown()
	start := time.Now()
	if second := r.replacedQR(t, img, lkWait); second == first {
		t.Errorf("the edit shows the first code again: %.30q", second)
	}
	if got, want := r.notice(t, "the timeout", "Linking"), "Linking phone failed: timed out: no phone scanned the code; try again"; got != want {
		t.Errorf("the room says %q, want %q", got, want)
	}
	if took := time.Since(start); took < 30*time.Second {
		t.Errorf("timed out after %v, before the two codes' 40 s", took)
	}
	r.redacted(t, img.ID)
	w.waitLinks(t, lkUnlinked)
	if n := len(w.ann.Companions()); n != 0 {
		t.Fatalf("the phone lists %d linked devices before any link", n)
	}

	// The replacing code links.
	img, first = linkShown()
	second := r.replacedQR(t, img, lkWait)
	if second == first {
		t.Fatalf("the edit shows the first code again: %.30q", second)
	}
	lkScan(t, w.ann, second)
	if got := r.notice(t, "the link's outcome", "Linked"); got != "Linked phone to +15551234567. Messages are relayed now." {
		t.Errorf("the room says %q", got)
	}
	r.redacted(t, img.ID)
	w.waitLinks(t, lkAnnConnected)
	w.relays(t, "linked by the replacing code")
}
