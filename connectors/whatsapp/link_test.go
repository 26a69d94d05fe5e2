package whatsapp

// Linking, as a user does it: the real whatsmeow client pairs with
// internal/fakewa, a fake phone scans the code the link shows (or types
// the pairing code), and what the user sees is checked: the progress, the
// result, the link's state, and what the phone lists. Each test has its own
// fake WhatsApp and state dir, so they run in parallel: they mostly wait
// on the network and on WhatsApp's schedule.

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/control"
	"github.com/phonebridge/phonebridge/config"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// checkExpires fails unless exp is lifetime after a moment between
// before and now: the code's lifetime counted from when it was shown.
func checkExpires(t *testing.T, exp, before time.Time, lifetime time.Duration) {
	t.Helper()
	if exp.Before(before.Add(lifetime)) || exp.After(time.Now().Add(lifetime)) {
		t.Errorf("Expires %v is not %v after the code was shown (between %v and now)", exp, lifetime, before)
	}
}

// checkNothingLinked fails if a failed link left anything behind: an
// account, keys in the store, or a device on the phone.
func checkNothingLinked(t *testing.T, w *waWorld, c *Connector) {
	t.Helper()
	if acct := c.LinkStatus().Account; acct != (bridge.LinkAccount{}) {
		t.Errorf("a failed link left account %+v", acct)
	}
	if devs, err := c.container.GetAllDevices(context.Background()); err != nil || len(devs) != 0 {
		t.Errorf("a failed link left devices %v (%v)", devs, err)
	}
	if devs := w.ann.Companions(); len(devs) != 0 {
		t.Errorf("after a failed link the phone lists linked devices %v", devs)
	}
}

// TestLinkByQRInProcess links with no daemon (the CLI's case): the phone
// scans the code, Link returns the account, and the device is left saved
// and offline: what is sent to it meanwhile waits in WhatsApp's queue,
// and a fresh connector started on the same store logs in with it, with
// no QR code, and relays what waited.
func TestLinkByQRInProcess(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c := r.openOnFake(w, "me", nil)
	ctx := ctxFor(t)
	p := newProgressLog()
	shown := time.Now()
	res := startLink(context.Background(), c, bridge.LinkOptions{}, p)
	lp := p.next(t)
	if lp.Kind != bridge.ProgressQR || lp.QR == "" {
		t.Fatalf("first progress %+v, want a QR code", lp)
	}
	// WhatsApp's six codes: the first shows for 60 s.
	checkExpires(t, lp.Expires, shown, 60*time.Second)
	dev, err := w.ann.ScanQR(ctx, lp.QR)
	if err != nil {
		t.Fatalf("the phone's scan: %v", err)
	}
	// Sent the moment the phone linked: whether it reaches the pairing
	// client or not, it must reach the daemon, once.
	if _, err := w.bob.SendText(ctx, w.ann.PN, "just linked"); err != nil {
		t.Fatal(err)
	}

	got := awaitLink(t, res)
	if got.err != nil {
		t.Fatalf("Link: %v", got.err)
	}
	w.annAt(t, got.acct)
	if name := w.ann.DeviceName(dev); name != DefaultDeviceName {
		t.Errorf("the phone lists the device as %q, want %q", name, DefaultDeviceName)
	}
	st := c.LinkStatus()
	if st.Account != got.acct || st.State != bridge.LinkStopped || st.Reason != bridge.ReasonNotRunning {
		t.Errorf("after linking in-process: status %+v, want stopped, linked to %+v, saying to start phonebridge", st, got.acct)
	}
	// With no daemon nothing relays: the client hangs up, and stays off.
	waitUntil(t, "the pairing client to hang up", func() bool { return !w.srv.Online(dev) })
	if _, err := w.bob.SendText(ctx, w.ann.PN, "while no daemon runs"); err != nil {
		t.Fatal(err)
	}
	if w.srv.Online(dev) {
		t.Error("the pairing client went back online with no daemon to relay its messages")
	}
	if n := w.srv.Pending(dev); n < 1 {
		t.Errorf("WhatsApp holds %d messages for the device while no daemon runs, want Bob's", n)
	}

	// The daemon's next start finds the device: it logs in, no QR code.
	stopWithin(t, c)
	c2 := r.openOnFake(w, "me", nil)
	if acct := c2.LinkStatus().Account; acct != got.acct {
		t.Fatalf("a new connector on the same store is linked to %+v, want %+v", acct, got.acct)
	}
	s := r.start(c2)
	s.waitRelaying(t, 0)
	for _, text := range []string{"just linked", "while no daemon runs"} {
		ev := s.waitEvent(t, text, textIs(text))
		if ev.Chat.ID != w.bob.PN.String() {
			t.Errorf("%q relayed in chat %s, want Bob's", text, ev.Chat.ID)
		}
	}
	waitUntil(t, "WhatsApp's queue to empty", func() bool { return w.srv.Pending(dev) == 0 })
	n := 0
	for _, ev := range s.eventList() {
		if ev.Text == "just linked" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the message sent as the phone linked was relayed %d times, want once", n)
	}
	if k := w.clientCount(); k != 2 {
		t.Errorf("%d clients made, want two: one to pair, one for the daemon", k)
	}
}

// TestLinkByQRInDaemon links a started connector. Link returns once
// WhatsApp has accepted the new device's session (after pairing the
// client must log in again): only then is the link reported connected
// and the group list fetched, so a route naming a group resolves and the
// core is told the chats changed. Messages relay at once.
func TestLinkByQRInDaemon(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c := r.openOnFake(w, "me", nil)
	s := newRecSink(r.store)
	early := make(chan string, 1)
	s.onState = func(sc stateCall) {
		if sc.State != bridge.StateConnected {
			return
		}
		for _, dev := range w.ann.Companions() {
			if w.srv.Online(dev) {
				return
			}
		}
		select {
		case early <- sc.Detail:
		default:
		}
	}
	if err := c.Start(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if st := c.LinkStatus(); st.State != bridge.LinkUnlinked {
		t.Fatalf("started unlinked: %+v, want unlinked", st)
	}
	if got := s.lastState(); got.State != coreState(bridge.LinkUnlinked) || !strings.Contains(got.Detail, "phonebridge link me") {
		t.Errorf("the core was told %+v for an unlinked link, want it to say to run `phonebridge link me`", got)
	}

	p := newProgressLog()
	res := startLink(context.Background(), c, bridge.LinkOptions{}, p)
	scanFirstCode(t, w.ann, p)
	got := awaitLink(t, res)
	if got.err != nil {
		t.Fatalf("Link: %v", got.err)
	}
	w.annAt(t, got.acct)
	dev := companionOf(t, w.ann)
	select {
	case line := <-early:
		t.Errorf("the link was reported connected (%q) before WhatsApp accepted the new device's session", line)
	default:
	}
	if st := c.LinkStatus(); st.State != bridge.LinkConnected || st.Account != got.acct {
		t.Errorf("Link returned; status %+v, want connected as %+v", st, got.acct)
	}
	if !w.srv.Online(dev) {
		t.Error("Link returned with the device not logged in")
	}

	// The group list loads once logged in: the core hears the chats
	// changed, and a route naming the group resolves.
	s.waitFor(t, "ChatsChanged", func() bool { return s.chatsChg >= 1 })
	if id, err := c.ResolveChat(context.Background(), "Family"); err != nil || id != w.family.JID.String() {
		t.Errorf("ResolveChat(Family) right after linking = %q, %v; want %s", id, err, w.family.JID)
	}

	// Messages relay at once.
	relays(t, w, s, "hi there")
	ev := s.waitEvent(t, "Bob's message", textIs("hi there"))
	if ev.Chat.ID != w.bob.PN.String() || ev.Sender.ID != w.bob.PN.String() || ev.Sender.Name != "Bob" {
		t.Errorf("relayed %+v, want Bob's message in Bob's chat", ev)
	}

	stopWithin(t, c)
	waitUntil(t, "the device to go offline after Stop", func() bool { return !w.srv.Online(dev) })
}

// TestLinkOnWhatsAppsSchedule: WhatsApp's codes rotate on its schedule,
// 20 s a code here; three links share those seconds, each with its own
// fake WhatsApp.
//   - Rotation (two codes): the link shows a new code when the old one
//     expires; the phone can scan it, and the old one no longer pairs.
//   - Timeout (one code): linking ends as the README says, when the code
//     said it expires, and leaves nothing behind.
//   - A wrong pairing code typed (one code): the phone says so; WhatsApp
//     tells the client nothing, so linking runs on until the code
//     expires, at the time it said, and then says what happened and what
//     to do: not "no phone scanned the code".
func TestLinkOnWhatsAppsSchedule(t *testing.T) {
	t.Parallel()
	type link struct {
		w   *waWorld
		c   *Connector
		p   *progressLog
		res <-chan linkResult
	}
	start := func(refs int, opts bridge.LinkOptions) *link {
		w := newWAWorld(t, fakewa.Options{QRRefs: refs})
		r := newRig(t)
		l := &link{w: w, c: r.openOnFake(w, "me", nil), p: newProgressLog()}
		if opts.Phone != "" {
			opts.Phone = "+" + w.ann.PN.User
		}
		l.res = startLink(context.Background(), l.c, opts, l.p)
		return l
	}
	shown := time.Now()
	rot, out, code := start(2, bridge.LinkOptions{}), start(1, bridge.LinkOptions{}), start(1, bridge.LinkOptions{Phone: "ann"})

	first := rot.p.next(t)
	if first.Kind != bridge.ProgressQR {
		t.Fatalf("rotation: first progress %+v, want a QR code", first)
	}
	checkExpires(t, first.Expires, shown, 20*time.Second)
	lone := out.p.next(t)
	checkExpires(t, lone.Expires, shown, 20*time.Second)
	pc := code.p.next(t)
	if pc.Kind != bridge.ProgressPairingCode {
		t.Fatalf("wrong code: progress %+v, want a pairing code", pc)
	}
	checkExpires(t, pc.Expires, shown, 20*time.Second)
	wrong := []byte(pc.PairingCode)
	wrong[0] = map[bool]byte{true: 'B', false: 'A'}[wrong[0] == 'A']
	if _, err := code.w.ann.EnterPairingCode(ctxFor(t), string(wrong)); err == nil {
		t.Fatal("wrong code: the phone took it")
	}

	second := rot.p.nextWithin(t, 30*time.Second)
	rotated := time.Now()
	if second.Kind != bridge.ProgressQR || second.QR == "" || second.QR == first.QR {
		t.Fatalf("rotation: second progress %+v, want a new QR code", second)
	}
	if rotated.Before(first.Expires.Add(-time.Second)) {
		t.Errorf("rotation: the code was replaced at %v, before it expired at %v", rotated, first.Expires)
	}
	checkExpires(t, second.Expires, rotated.Add(-time.Second), 20*time.Second)
	if _, err := rot.w.ann.ScanQR(ctxFor(t), second.QR); err != nil {
		t.Fatalf("rotation: the phone's scan of the new code: %v", err)
	}
	got := awaitLink(t, rot.res)
	if got.err != nil {
		t.Fatalf("rotation: Link: %v", got.err)
	}
	rot.w.annAt(t, got.acct)
	if _, err := rot.w.ann.ScanQR(ctxFor(t), first.QR); !errors.Is(err, fakewa.ErrCodeExpired) {
		t.Errorf("rotation: scanning the replaced code: %v, want %v", err, fakewa.ErrCodeExpired)
	}
	if devs := rot.w.ann.Companions(); len(devs) != 1 {
		t.Errorf("rotation: the phone lists %v, want the one device", devs)
	}

	got = awaitLinkWithin(t, out.res, 10*time.Second)
	if reason := linkReason(t, got.err); reason != bridge.LinkTimedOut || got.err.Error() != string(bridge.LinkTimedOut) {
		t.Errorf("timeout: Link: %v, want %q", got.err, bridge.LinkTimedOut)
	}
	if d := got.at.Sub(lone.Expires); d < -time.Second || d > 2*time.Second {
		t.Errorf("timeout: timed out %v after the code's announced expiry", d)
	}
	if all := out.p.all(); len(all) != 1 {
		t.Errorf("timeout: progress %+v, want the one code", all)
	}
	if _, err := out.w.ann.ScanQR(ctxFor(t), lone.QR); err == nil {
		t.Error("timeout: the code of a timed-out link still pairs")
	}
	checkNothingLinked(t, out.w, out.c)

	got = awaitLinkWithin(t, code.res, 10*time.Second)
	if d := got.at.Sub(pc.Expires); d < -time.Second || d > 2*time.Second {
		t.Errorf("wrong code: linking ended %v after the code's announced expiry", d)
	}
	if reason := linkReason(t, got.err); reason != bridge.LinkCodeExpired {
		t.Errorf("wrong code: Link: %v, want %q", got.err, bridge.LinkCodeExpired)
	}
	checkNothingLinked(t, code.w, code.c)
}

// TestLinkCancelled: Ctrl-C while the code shows ends linking as
// cancelled; nothing is saved, the phone lists nothing, and the code on
// the screen no longer links.
func TestLinkCancelled(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c := r.openOnFake(w, "me", nil)
	ctx, cancel := context.WithCancel(context.Background())
	p := newProgressLog()
	res := startLink(ctx, c, bridge.LinkOptions{}, p)
	lp := p.next(t)
	cancel()
	got := awaitLink(t, res)
	var le *bridge.LinkError
	if !errors.As(got.err, &le) || le.Reason != bridge.LinkCancelled || le.Cause != "" {
		t.Fatalf("Link: %v, want cancelled with no detail (the CLI then says Ctrl-C)", got.err)
	}
	if _, err := w.ann.ScanQR(ctxFor(t), lp.QR); err == nil {
		t.Error("the code of a cancelled link still pairs")
	}
	checkNothingLinked(t, w, c)
	// Nothing is held: linking again works at once.
	linkByQR(t, c, w.ann)
}

// TestLinkCancelledNotFailed: on cancel whatsmeow closes the code channel
// too; a link that saw the closed channel before its context reported
// "WhatsApp closed the pairing session" for a Ctrl-C. Each round holds
// Link in its progress report until whatsmeow has closed the channel, so
// both are ready when Link looks.
func TestLinkCancelledNotFailed(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c := r.openOnFake(w, "me", nil)
	for round := 1; round <= 8; round++ {
		ctx, cancel := context.WithCancel(context.Background())
		_, err := c.Link(ctx, bridge.LinkOptions{}, func(lp bridge.LinkProgress) {
			cancel()
			cli := w.client(t, round)
			// whatsmeow closes the channel, then disconnects.
			waitUntil(t, "whatsmeow to end the pairing session", func() bool { return !cli.IsConnected() })
		})
		var le *bridge.LinkError
		if !errors.As(err, &le) || le.Reason != bridge.LinkCancelled {
			t.Fatalf("round %d: Link: %v, want cancelled", round, err)
		}
	}
}

// TestLinkScannedWithoutMultidevice: a phone whose WhatsApp has no linked
// devices scans the code; linking ends as the README says.
func TestLinkScannedWithoutMultidevice(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	w.ann.NoMultidevice = true
	r := newRig(t)
	c := r.openOnFake(w, "me", nil)
	p := newProgressLog()
	res := startLink(context.Background(), c, bridge.LinkOptions{}, p)
	lp := p.next(t)
	if _, err := w.ann.ScanQR(ctxFor(t), lp.QR); err == nil {
		t.Fatal("an old WhatsApp linked")
	}
	got := awaitLink(t, res)
	if reason := linkReason(t, got.err); reason != bridge.LinkNoMultidevice || got.err.Error() != string(bridge.LinkNoMultidevice) {
		t.Fatalf("Link: %v, want %q", got.err, bridge.LinkNoMultidevice)
	}
	checkNothingLinked(t, w, c)
}

// TestLinkClientOutdated: WhatsApp refuses this client version while
// linking; linking ends as the README says.
func TestLinkClientOutdated(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	w.srv.RefuseOutdated(true)
	r := newRig(t)
	c := r.openOnFake(w, "me", nil)
	p := newProgressLog()
	got := awaitLink(t, startLink(context.Background(), c, bridge.LinkOptions{}, p))
	if reason := linkReason(t, got.err); reason != bridge.LinkOutdated || got.err.Error() != string(bridge.LinkOutdated) {
		t.Fatalf("Link: %v, want %q", got.err, bridge.LinkOutdated)
	}
	if all := p.all(); len(all) != 0 {
		t.Errorf("progress %+v from a refused client", all)
	}
	checkNothingLinked(t, w, c)
}

// TestLinkByPairingCode: with a phone number the link shows a pairing
// code (once, while QR codes rotate underneath), good until WhatsApp ends
// the session (six codes: 160 s); the phone's owner types it and the
// device links.
func TestLinkByPairingCode(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c := r.openOnFake(w, "me", nil)
	p := newProgressLog()
	shown := time.Now()
	res := startLink(context.Background(), c, bridge.LinkOptions{Phone: "+" + w.ann.PN.User}, p)
	lp := p.next(t)
	if lp.Kind != bridge.ProgressPairingCode || lp.PairingCode == "" || lp.QR != "" {
		t.Fatalf("progress %+v, want a pairing code and no QR code", lp)
	}
	checkExpires(t, lp.Expires, shown, 160*time.Second)
	dev, err := w.ann.EnterPairingCode(ctxFor(t), lp.PairingCode)
	if err != nil {
		t.Fatalf("the phone took the code: %v", err)
	}
	got := awaitLink(t, res)
	if got.err != nil {
		t.Fatalf("Link: %v", got.err)
	}
	w.annAt(t, got.acct)
	if devs := w.ann.Companions(); len(devs) != 1 || devs[0] != dev {
		t.Errorf("the phone lists %v, want %v", devs, dev)
	}
	if all := p.all(); len(all) != 1 {
		t.Errorf("progress %+v, want the pairing code alone", all)
	}
}

// TestLinkPairingCodeRefused: a number not in international format is
// refused before WhatsApp is asked.
func TestLinkPairingCodeRefused(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c := r.openOnFake(w, "me", nil)
	got := awaitLink(t, startLink(context.Background(), c, bridge.LinkOptions{Phone: "+05550001111"}, newProgressLog()))
	if reason := linkReason(t, got.err); reason != bridge.LinkFailed || !strings.Contains(got.err.Error(), "international") {
		t.Errorf("Link: %v, want a failure saying the number is not international", got.err)
	}
	waitUntil(t, "the refused pairing client to hang up", func() bool { return !w.client(t, 1).IsConnected() })
	checkNothingLinked(t, w, c)
}

// TestLinkAlreadyLinked refuses to link a link that has a device.
func TestLinkAlreadyLinked(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c, _ := r.linkedOnFake(w, "me", nil)
	clients := w.clientCount()
	_, err := c.Link(context.Background(), bridge.LinkOptions{}, func(bridge.LinkProgress) { t.Error("progress while already linked") })
	if reason := linkReason(t, err); reason != bridge.LinkAlreadyLinked {
		t.Fatalf("reason %q, want %q", reason, bridge.LinkAlreadyLinked)
	}
	// The account's name comes later, with the phone's app state.
	var le *bridge.LinkError
	if errors.As(err, &le); le.Account == nil || le.Account.Handle != "+"+w.ann.PN.User || le.Service != "WhatsApp" {
		t.Errorf("error %+v, want it to name the account +%s", le, w.ann.PN.User)
	}
	if n := w.clientCount(); n != clients {
		t.Errorf("%d clients made for a refused link", n-clients)
	}
	if devs := w.ann.Companions(); len(devs) != 1 {
		t.Errorf("the phone lists %v, want the one device", devs)
	}
}

// TestLinkConcurrent refuses a second Link while one runs.
func TestLinkConcurrent(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c := r.openOnFake(w, "me", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newProgressLog()
	first := startLink(ctx, c, bridge.LinkOptions{}, p)
	p.next(t) // the first shows its code

	_, err := c.Link(context.Background(), bridge.LinkOptions{}, func(bridge.LinkProgress) { t.Error("progress from a refused link") })
	if reason := linkReason(t, err); reason != bridge.LinkBusy {
		t.Fatalf("second Link: %q, want %q", reason, bridge.LinkBusy)
	}
	if n := w.clientCount(); n != 1 {
		t.Errorf("the refused Link made a client (%d in all)", n)
	}
	cancel()
	if reason := linkReason(t, awaitLink(t, first).err); reason != bridge.LinkCancelled {
		t.Errorf("first Link: %q, want cancelled", reason)
	}
}

// TestLinkLockSharedWithOtherConnectors checks that two drivers of one
// device (two processes on one state dir) exclude each other: a daemon
// holds the link's lock, and so does a CLI linking with no daemon.
func TestLinkLockSharedWithOtherConnectors(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	daemon := r.openOnFake(w, "me", nil)
	r.start(daemon)

	cli := r.openOnFake(w, "me", nil) // the same link, opened by another process
	_, err := cli.Link(context.Background(), bridge.LinkOptions{}, func(bridge.LinkProgress) {})
	if reason := linkReason(t, err); reason != bridge.LinkBusy {
		t.Fatalf("Link beside a running daemon: %q, want %q", reason, bridge.LinkBusy)
	}
	if n := w.clientCount(); n != 0 {
		t.Errorf("%d clients made without the lock", n)
	}
	if err := cli.Start(context.Background(), newRecSink(r.store)); err == nil || !strings.Contains(err.Error(), "in use by another phonebridge process") {
		t.Errorf("a second daemon's Start: %v, want it refused as in use", err)
	}
	stopWithin(t, daemon)

	// Now the CLI links with no daemon: a daemon starting meanwhile is
	// refused until linking ends.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newProgressLog()
	res := startLink(ctx, cli, bridge.LinkOptions{}, p)
	p.next(t)
	late := r.openOnFake(w, "me", nil)
	if err := late.Start(context.Background(), newRecSink(r.store)); err == nil {
		t.Error("a daemon started while the CLI was linking")
	}
	cancel()
	if reason := linkReason(t, awaitLink(t, res).err); reason != bridge.LinkCancelled {
		t.Fatalf("Link: %q, want cancelled", reason)
	}
	if err := late.Start(context.Background(), newRecSink(r.store)); err != nil {
		t.Errorf("Start after the CLI stopped linking: %v", err)
	}
}

// TestLinkLockHeldByAnotherProcess checks the lock against a real second
// process: while it holds the lock, linking here is busy.
func TestLinkLockHeldByAnotherProcess(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c := r.openOnFake(w, "me", nil)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PHONEBRIDGE_TEST_HOLD_LOCK="+filepath.Join(r.dir, "whatsapp-me.lock"))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line := readLine(t, bufio.NewReader(stdout)); line != "locked" {
		t.Fatalf("the helper process said %q, want locked", line)
	}

	_, err = c.Link(context.Background(), bridge.LinkOptions{}, func(bridge.LinkProgress) {})
	if reason := linkReason(t, err); reason != bridge.LinkBusy {
		t.Fatalf("Link while another process holds the lock: %q, want %q", reason, bridge.LinkBusy)
	}

	// The kernel frees the lock with the process: linking works again.
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper process: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newProgressLog()
	res := startLink(ctx, c, bridge.LinkOptions{}, p)
	if lp := p.next(t); lp.Kind != bridge.ProgressQR {
		t.Errorf("Link after the other process ended: %+v, want a QR code", lp)
	}
	cancel()
	if reason := linkReason(t, awaitLink(t, res).err); reason != bridge.LinkCancelled {
		t.Errorf("Link after the other process ended: %q, want it to run (and be cancelled)", reason)
	}
}

// TestLinkNetworkDown: while WhatsApp cannot be reached (real dials to a
// closed port), linking says so in one line, not once per attempt, keeps
// trying, and links once the network is back; on Ctrl-C during the
// outage it ends with the network as the reason.
func TestLinkNetworkDown(t *testing.T) {
	t.Parallel()
	t.Run("comes back", func(t *testing.T) {
		w := newWAWorld(t, fakewa.Options{})
		w.net.Down()
		r := newRig(t)
		c := r.openOnFake(w, "me", nil)
		p := newProgressLog()
		res := startLink(context.Background(), c, bridge.LinkOptions{}, p)
		info := p.next(t)
		if info.Kind != bridge.ProgressWaiting || info.Reason != bridge.ReasonNetworkDown || !strings.Contains(info.Cause, "connection refused") {
			t.Fatalf("first progress %+v, want one line saying WhatsApp cannot be reached and it retries", info)
		}
		waitUntil(t, "a retry", func() bool { return w.net.dials.Load() >= 2 })
		w.net.Up()
		scanFirstCode(t, w.ann, p) // the next progress is the code, not the outage again
		if got := awaitLink(t, res); got.err != nil {
			t.Fatalf("Link after the outage: %v", got.err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		w := newWAWorld(t, fakewa.Options{})
		w.net.Down()
		r := newRig(t)
		c := r.openOnFake(w, "me", nil)
		p := newProgressLog()
		ctx, cancel := context.WithCancel(context.Background())
		res := startLink(ctx, c, bridge.LinkOptions{}, p)
		if info := p.next(t); info.Kind != bridge.ProgressWaiting {
			t.Fatalf("progress %+v, want the outage line", info)
		}
		cancel()
		got := awaitLink(t, res)
		if reason := linkReason(t, got.err); reason != bridge.LinkNetworkDown {
			t.Fatalf("reason %q, want %q", reason, bridge.LinkNetworkDown)
		}
		if !strings.Contains(got.err.Error(), "connection refused") {
			t.Errorf("error %q does not say why", got.err)
		}
	})
}

// TestLinkNetworkDownAfterPairing: the network drops between the phone's
// scan and the new device's first login (WhatsApp has the client log in
// again after pairing). whatsmeow tries that login once; the link keeps
// trying, says why it is not connected, and relays once the network is
// back.
func TestLinkNetworkDownAfterPairing(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c := r.openOnFake(w, "me", nil)
	s := r.start(c)
	p := newProgressLog()
	res := startLink(context.Background(), c, bridge.LinkOptions{}, p)
	lp := p.next(t)
	w.net.Down() // the pairing connection is up already; the next dial fails
	if _, err := w.ann.ScanQR(ctxFor(t), lp.QR); err != nil {
		t.Fatalf("the phone's scan: %v", err)
	}
	s.waitFor(t, "the link to say why it is not connected", func() bool {
		return len(s.states) > 0 && strings.Contains(s.states[len(s.states)-1].Detail, "connection refused")
	})
	if st := c.LinkStatus(); st.State != bridge.LinkConnecting || st.Reason != bridge.ReasonNetworkDown {
		t.Errorf("status %+v, want connecting, saying WhatsApp cannot be reached", st)
	}
	waitUntil(t, "a retry", func() bool { return w.net.dials.Load() >= 2 })
	w.net.Up()
	if got := awaitLink(t, res); got.err != nil {
		t.Fatalf("Link: %v", got.err)
	}
	s.waitRelaying(t, 0)
	relays(t, w, s, "after the outage")
}

// ctlBackend is the bridge as the daemon serves it on the control socket.
type ctlBackend struct{ *bridge.Bridge }

func (ctlBackend) Version() string { return "test" }

func (ctlBackend) Status(context.Context) (control.StatusReport, error) {
	return control.StatusReport{}, errors.New("this test serves links only")
}

func (ctlBackend) Reload(context.Context) (control.ReloadReport, error) {
	return control.ReloadReport{}, errors.New("this test serves links only")
}

// TestLinkThroughControlSocket drives linking the way `phonebridge link`
// does with a daemon running: through the control socket's link stream.
func TestLinkThroughControlSocket(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	w.eve.NoMultidevice = true
	dir := t.TempDir()
	cfg, err := config.Parse([]byte(`
state_dir: ./state
connectors:
  me: {type: whatsapp}
  work: {type: whatsapp}
`), filepath.Join(dir, "phonebridge.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := bridge.Open(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"me", "work"} {
		l, _ := b.Linker(name)
		w.onFake(l.(*Connector))
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.srv.Quiesce(2 * time.Second) // see Quiesce: whatsmeow's close races a send
		ctx, cancel := context.WithTimeout(context.Background(), waitBound)
		defer cancel()
		if err := b.Stop(ctx); err != nil {
			t.Errorf("stop the bridge: %v", err)
		}
	})
	sock := filepath.Join(cfg.StateDir, "phonebridge.sock")
	srv, err := control.Listen(sock, ctlBackend{b}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitBound)
		defer cancel()
		srv.Close(ctx)
	})
	client, err := control.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t)
	link := func(name string, p *progressLog) <-chan linkResult {
		res := make(chan linkResult, 1)
		go func() {
			acct, err := client.Link(ctx, name, bridge.LinkOptions{}, p.report)
			res <- linkResult{acct, err, time.Now()}
		}()
		return res
	}

	// Success: the code as a frame, then the account.
	p := newProgressLog()
	res := link("me", p)
	lp := p.next(t)
	if lp.Kind != bridge.ProgressQR || lp.QR == "" || lp.Expires.IsZero() {
		t.Fatalf("frame %+v, want a QR code with its expiry", lp)
	}
	if _, err := w.ann.ScanQR(ctx, lp.QR); err != nil {
		t.Fatalf("the phone's scan of the code from the socket: %v", err)
	}
	l := awaitLink(t, res)
	if l.err != nil {
		t.Fatalf("client Link: %v", l.err)
	}
	w.annAt(t, l.acct)
	links, err := client.Links(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != 2 || links[0].Name != "me" || links[0].State != bridge.LinkConnected || links[0].Account != l.acct {
		t.Errorf("links after linking: %+v, want me connected as %+v", links, l.acct)
	}
	if links[1].Name != "work" || links[1].State != bridge.LinkUnlinked {
		t.Errorf("links[1] = %+v, want work unlinked", links[1])
	}
	// The daemon lists the new link's groups: routes naming them resolve.
	me, _ := b.Linker("me")
	waitUntil(t, "the group list", func() bool {
		id, err := me.(*Connector).ResolveChat(ctx, "Family")
		return err == nil && id == w.family.JID.String()
	})

	// A failure arrives on the client side as the same reason.
	p = newProgressLog()
	res = link("work", p)
	if _, err := w.eve.ScanQR(ctx, p.next(t).QR); err == nil {
		t.Fatal("a phone without linked devices linked")
	}
	l = awaitLink(t, res)
	var le *bridge.LinkError
	if !errors.As(l.err, &le) || le.Reason != bridge.LinkNoMultidevice {
		t.Fatalf("client Link error %v (%T), want a *bridge.LinkError %q", l.err, l.err, bridge.LinkNoMultidevice)
	}

	// So does refusing to link twice.
	l = awaitLink(t, link("me", newProgressLog()))
	if !errors.As(l.err, &le) || le.Reason != bridge.LinkAlreadyLinked {
		t.Errorf("linking a linked link: %v, want already linked", l.err)
	}
}

// TestLinkFailuresScripted maps the pairing outcomes fakewa cannot
// produce to their reasons, on the scripted client: a phone that signs
// pair-success wrongly (PairError, an error item) or a pairing session
// that ends with no outcome or in an unexpected state would need a
// broken WhatsApp, which the fake does not play.
func TestLinkFailuresScripted(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script func(t *testing.T, cl *fakeClient)
		detail string
	}{
		{"pairing error item", func(t *testing.T, cl *fakeClient) {
			cl.code("2@a", time.Second)
			cl.finish(whatsmeow.QRChannelItem{Event: whatsmeow.QRChannelEventError, Error: errors.New("device signature mismatch")})
		}, "device signature mismatch"},
		{"pair error event", func(t *testing.T, cl *fakeClient) {
			cl.code("2@a", time.Second)
			cl.deliver(&events.PairError{Error: errors.New("failed to store main device identity")})
		}, "failed to store main device identity"},
		{"session closed", func(t *testing.T, cl *fakeClient) {
			close(cl.qr)
		}, "closed the pairing session"},
		{"unexpected state", func(t *testing.T, cl *fakeClient) {
			cl.finish(whatsmeow.QRChannelErrUnexpectedEvent)
		}, "err-unexpected-state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			c := r.open("me", nil)
			res := startLink(context.Background(), c, bridge.LinkOptions{}, newProgressLog())
			cl := r.wa.client(t, 1)
			cl.waitConnected(t)
			tc.script(t, cl)
			got := awaitLink(t, res)
			if reason := linkReason(t, got.err); reason != bridge.LinkFailed || !strings.Contains(got.err.Error(), tc.detail) {
				t.Errorf("Link: %v, want %q saying %q", got.err, bridge.LinkFailed, tc.detail)
			}
			if cl.IsConnected() {
				t.Error("the failed pairing client stays connected")
			}
			if devs, err := c.container.GetAllDevices(context.Background()); err != nil || len(devs) != 0 {
				t.Errorf("a failed link left devices %v (%v)", devs, err)
			}
		})
	}
}
