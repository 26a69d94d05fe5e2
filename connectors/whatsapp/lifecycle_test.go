package whatsapp

// A linked link's life on the real whatsmeow client and internal/fakewa:
// drops, keep-alives lost and restored, logout from the phone, the
// client's own unlink, stream replaced, client outdated, temporary bans
// and an unreachable network, each checked as the operator sees it: the
// link's state and the core's, and the notices. Each test has its own fake
// WhatsApp and state dir, so they run in parallel.

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/internal/fakewa"
	"github.com/phonebridge/phonebridge/internal/linktext"
)

// relays checks that a message from Bob reaches the sink, and waits for
// its delivery receipt: a test may end then without a frame in flight
// (see waitRelaying).
func relays(t *testing.T, w *waWorld, s *recSink, text string) {
	t.Helper()
	ctx := ctxFor(t)
	id, err := w.bob.SendText(ctx, w.ann.PN, text)
	if err != nil {
		t.Fatal(err)
	}
	s.waitEvent(t, "Bob's message "+text, textIs(text))
	if _, err := w.bob.WaitReceipt(ctx, func(r fakewa.Receipt) bool {
		return (r.Type == "" || r.Type == "inactive") && slices.Contains(r.IDs, id)
	}); err != nil {
		t.Fatalf("no delivery receipt for %q: %v", text, err)
	}
}

// statesSince is what the core was told from the n-th state on.
func (s *recSink) statesSince(n int) []stateCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]stateCall(nil), s.states[n:]...)
}

func (s *recSink) stateCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.states)
}

// TestLifecycleDrop: the connection drops (WhatsApp closes it); the link
// says it is reconnecting, whatsmeow reconnects, and it relays again. A
// drop that heals by itself is no notice for the operator.
func TestLifecycleDrop(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c, s := r.linkedOnFake(w, "me", nil)
	before, n := s.stateCount(), s.chatsCount()
	since := c.LinkStatus().Since
	w.srv.Kick(w.ann)
	s.waitFor(t, "reconnecting, then connected", func() bool {
		lost := false
		for _, sc := range s.states[before:] {
			if sc.State == bridge.StateDisconnected && strings.Contains(sc.Detail, "the connection dropped") {
				lost = true
			}
			if lost && sc.State == bridge.StateConnected {
				return true
			}
		}
		return false
	})
	s.waitRelaying(t, n)
	if st := c.LinkStatus(); st.State != bridge.LinkConnected || !st.Since.After(since) {
		t.Errorf("after the drop: %+v, want connected since the reconnection", st)
	}
	if n := s.noticeList(); len(n) != 0 {
		t.Errorf("notices %q for a drop that healed", n)
	}
	relays(t, w, s, "after the drop")
}

// TestLifecycleKeepAlive: WhatsApp stops answering (packets lost, no
// close); the link says WhatsApp does not answer and tells the operator
// once, however many keep-alives fail, then says it is reachable again
// when the server answers, and relays.
func TestLifecycleKeepAlive(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c, s := r.linkedOnFake(w, "me", nil)
	cli, _ := c.current()
	evs := watchEvents(cli)

	w.srv.SetSilent(true)
	s.waitFor(t, "phone unreachable", s.stateIs(coreState(bridge.LinkPhoneOffline)))
	st := c.LinkStatus()
	if st.State != bridge.LinkPhoneOffline || st.Cause != "keep-alive lost" {
		t.Errorf("status %+v, want phone unreachable (keep-alive lost)", st)
	}
	if got := s.lastState(); !strings.Contains(got.Detail, "does not answer") {
		t.Errorf("the core was told %+v, want it to say WhatsApp does not answer", got)
	}
	evs.wait(t, "a second keep-alive lost", func(e any) bool {
		kt, ok := e.(*events.KeepAliveTimeout)
		return ok && kt.ErrorCount >= 2
	})
	if again := c.LinkStatus(); again.State != st.State || !again.Since.Equal(st.Since) {
		t.Errorf("after a second keep-alive lost: %+v, want the state and its since unchanged from %+v", again, st)
	}
	notices := s.noticeList()
	if len(notices) != 1 || !strings.Contains(notices[0], "WhatsApp link 'me' cannot reach WhatsApp (keep-alive lost)") {
		t.Errorf("notices %q, want one saying link 'me' cannot reach WhatsApp", notices)
	}

	w.srv.SetSilent(false)
	handled[*events.KeepAliveRestored](t, evs)
	if got := s.lastState(); got.State != bridge.StateConnected {
		t.Errorf("the core was told %+v, want connected", got)
	}
	if st := c.LinkStatus(); st.State != bridge.LinkConnected {
		t.Errorf("status %+v, want connected", st)
	}
	notices = s.noticeList()
	if len(notices) != 2 || !strings.Contains(notices[1], "WhatsApp link 'me' is reachable again") {
		t.Errorf("notices %q, want a second saying link 'me' is reachable again", notices)
	}
	relays(t, w, s, "after the silence")
}

// TestLifecycleLoggedOutFromPhone: the phone's owner removes the device.
// The link says logged out and what to run, tells the operator, forgets
// the device (a restart stays unlinked), and linking again works and
// relays.
func TestLifecycleLoggedOutFromPhone(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c, s := r.linkedOnFake(w, "me", nil)
	dev := *c.dev().ID
	cli, _ := c.current()
	evs := watchEvents(cli)
	s.mu.Lock()
	changed := s.chatsChg
	s.mu.Unlock()

	if err := w.ann.RemoveCompanion(dev); err != nil {
		t.Fatal(err)
	}
	handled[*events.LoggedOut](t, evs)
	if got := s.lastState(); got.State != coreState(bridge.LinkLoggedOut) {
		t.Errorf("the core was told %+v, want logged out", got)
	}
	st := c.LinkStatus()
	if st.State != bridge.LinkLoggedOut || st.Account != (bridge.LinkAccount{}) || st.Cause == "" {
		t.Errorf("status %+v, want logged out with no account, saying WhatsApp's reason", st)
	}
	if got := s.lastState(); !strings.Contains(got.Detail, "phonebridge link me") {
		t.Errorf("the core was told %+v, want it to say to run `phonebridge link me`", got)
	}
	want := "WhatsApp link 'me' was logged out from the phone — run `phonebridge link me`"
	if notices := s.noticeList(); len(notices) != 1 || notices[0] != want {
		t.Errorf("notices %q, want %q", notices, want)
	}
	s.mu.Lock()
	if s.chatsChg == changed {
		t.Error("the core was not told the chats changed")
	}
	s.mu.Unlock()
	if _, err := c.Send(context.Background(), &bridge.Outgoing{Event: bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{ID: w.bob.PN.String()}, Text: "hi"}, Key: "pb.1"}); err == nil || bridge.IsPermanent(err) {
		t.Errorf("Send after logout: %v, want a transient error (the event waits for a new link)", err)
	}
	var links int
	if err := r.store.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM whatsapp_links WHERE link = 'me'`).Scan(&links); err != nil || links != 0 {
		t.Errorf("%d link records left after the logout (%v)", links, err)
	}
	// whatsmeow deletes the keys beside dispatching the event.
	waitUntil(t, "the removed device's keys to be deleted", func() bool {
		d, err := c.container.GetDevice(context.Background(), dev)
		return err == nil && d == nil
	})
	if acct := r.openOnFake(w, "me", nil).LinkStatus().Account; acct != (bridge.LinkAccount{}) {
		t.Errorf("a new connector on the same store is linked to %+v after the logout", acct)
	}

	// Link again, as the notice says, on the running daemon.
	n := s.chatsCount()
	linkByQR(t, c, w.ann)
	s.waitRelaying(t, n)
	relays(t, w, s, "linked again")
}

// TestLifecycleStreamReplaced: another client takes the session over.
// The link says so and tells the operator to restart, and does not fight
// for the session; a restart takes it back.
func TestLifecycleStreamReplaced(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c, s := r.linkedOnFake(w, "me", nil)
	dev := *c.dev().ID
	cli, _ := c.current()
	evs := watchEvents(cli)
	w.srv.Replace(dev)
	handled[*events.StreamReplaced](t, evs)
	if st := c.LinkStatus(); st.Account.ID != w.ann.PN.String() {
		t.Errorf("status %+v, want still linked", st)
	}
	refusedThenRestarted(t, r, w, c, s, bridge.LinkReplaced, "restart phonebridge",
		"WhatsApp link 'me' was taken over by another client", nil)
}

// refusedThenRestarted checks that a link WhatsApp refused is in state,
// that the core was told todo, and the owner notice once; then that a
// restart, after unrefuse, relays again.
func refusedThenRestarted(t *testing.T, r *rig, w *waWorld, c *Connector, s *recSink, state bridge.LinkState, todo, notice string, unrefuse func()) {
	t.Helper()
	if st := c.LinkStatus(); st.State != state {
		t.Errorf("status %+v, want %s", st, state)
	}
	if got := s.lastState(); got.State != coreState(state) || !strings.Contains(got.Detail, todo) {
		t.Errorf("the core was told %+v, want it to say to %s", got, todo)
	}
	// The notice follows the state (both from the link's goroutine).
	s.waitFor(t, "the notice", func() bool { return len(s.notices) > 0 })
	if notices := s.noticeList(); len(notices) != 1 || !strings.Contains(notices[0], notice) {
		t.Errorf("notices %q, want one saying %q", notices, notice)
	}
	if unrefuse != nil {
		unrefuse()
	}
	stopWithin(t, c)
	s2 := r.start(r.openOnFake(w, "me", nil))
	s2.waitRelaying(t, 0)
	relays(t, w, s2, "after a restart")
}

// TestLifecycleClientOutdated: WhatsApp refuses this version at a
// reconnection, and WhatsApp Web's page offers no newer one to retry with
// (version_test.go has the retries). The link says to update and tells
// the operator; once updated (the server accepts it again) a restart
// relays.
func TestLifecycleClientOutdated(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c, s := r.linkedOnFake(w, "me", nil)
	cli, _ := c.current()
	evs := watchEvents(cli)
	w.srv.RefuseOutdated(true)
	w.srv.Kick(w.ann)
	handled[*events.ClientOutdated](t, evs)
	// Reported once the page is read, after the event.
	s.waitFor(t, "client outdated", s.stateIs(coreState(bridge.LinkClientOutdated)))
	refusedThenRestarted(t, r, w, c, s, bridge.LinkClientOutdated, "update phonebridge",
		"WhatsApp refused link 'me' because this phonebridge is outdated; update phonebridge",
		func() { w.srv.RefuseOutdated(false) })
}

// TestTemporaryBan: WhatsApp refuses the login with a temporary ban. The
// link says until when and tells the operator; whatsmeow does not try
// again, the link does, once the ban is over, and relays.
func TestTemporaryBan(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c, s := r.linkedOnFake(w, "me", nil)
	cli, _ := c.current()
	evs := watchEvents(cli)
	n := s.chatsCount()
	w.srv.Ban(2 * time.Second)
	banned := time.Now()
	w.srv.Kick(w.ann)
	handled[*events.TemporaryBan](t, evs)
	st := c.LinkStatus()
	if st.State != bridge.LinkBanned || !strings.HasPrefix(st.Cause, "101") {
		t.Errorf("status %+v, want temporarily banned with WhatsApp's reason", st)
	}
	if st.Until.Before(banned.Add(2*time.Second).Truncate(time.Second)) || st.Until.After(time.Now().Add(2*time.Second)) {
		t.Errorf("until %v, want 2 s after the ban (%v)", st.Until, banned)
	}
	if got := s.lastState(); got.State != coreState(bridge.LinkBanned) || !strings.Contains(got.Detail, st.Until.Format(time.RFC3339)) {
		t.Errorf("the core was told %+v, want the ban with its end %s", got, st.Until.Format(time.RFC3339))
	}
	notices := s.noticeList()
	if len(notices) != 1 || !strings.Contains(notices[0], "WhatsApp temporarily banned link 'me'") || !strings.Contains(notices[0], st.Until.Format(time.RFC1123)) {
		t.Errorf("notices %q, want one saying link 'me' is banned until %s", notices, st.Until.Format(time.RFC1123))
	}

	w.srv.Unban()
	s.waitRelaying(t, n)
	after := c.LinkStatus()
	if after.State != bridge.LinkConnected || !after.Until.IsZero() {
		t.Errorf("after the ban: %+v, want connected with no end of ban", after)
	}
	if after.Since.Before(st.Until) {
		t.Errorf("connected at %v, before the ban ended at %v", after.Since, st.Until)
	}
	relays(t, w, s, "after the ban")
}

// TestConnectFailureRetries reports a refused connection as connecting,
// and then really connects again (whatsmeow does not for these). Scripted:
// fakewa refuses logins only for the reasons whatsmeow handles itself
// (401, 402, 405); events.ConnectFailure is the rest, which a test cannot
// get from it.
func TestConnectFailureRetries(t *testing.T) {
	r := newRig(t)
	c := r.linked("me", "+15550001111", "Ann", nil)
	s, cl := r.startConnected(c)

	cl.drop()
	cl.deliver(&events.ConnectFailure{Reason: events.ConnectFailureReason(418), Message: "teapot"})
	st := c.LinkStatus()
	if st.State != bridge.LinkConnecting || st.Reason != bridge.ReasonRefused || !strings.Contains(st.Cause, "teapot") {
		t.Errorf("status %+v, want connecting, saying WhatsApp refused and why", st)
	}
	// Reconnecting after a failure: the core logs it as a warning.
	if got := s.lastState(); got.State != bridge.StateDisconnected {
		t.Errorf("the core was told %+v, want disconnected", got)
	}
	s.waitFor(t, "connected again after the refusal", s.stateIs(bridge.StateConnected))
	if !cl.IsConnected() {
		t.Error("connected state without a connection")
	}

	// A logged-out failure is left to *events.LoggedOut.
	before := c.LinkStatus()
	cl.deliver(&events.ConnectFailure{Reason: events.ConnectFailureLoggedOut})
	if st := c.LinkStatus(); st.State != before.State || st.Reason != before.Reason || st.Cause != before.Cause {
		t.Errorf("a logged-out connect failure changed the status to %+v", st)
	}
}

// linkedStopped is a link to Ann's account saved on the rig's store and
// not running: the daemon's state before a start.
func (r *rig) linkedStopped(w *waWorld) {
	r.t.Helper()
	c, _ := r.linkedOnFake(w, "me", nil)
	stopWithin(r.t, c)
}

// TestConnectRetriesWhileNetworkDown: at start WhatsApp cannot be reached
// (real dials to a closed port); the link keeps dialling with backoff,
// says why in one line (once, not per attempt), and connects once the
// network is back.
func TestConnectRetriesWhileNetworkDown(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	r.linkedStopped(w)
	w.net.Down()
	c := r.openOnFake(w, "me", nil)
	s := r.start(c)
	s.waitFor(t, "the reason in the state", func() bool {
		return len(s.states) > 0 && strings.Contains(s.states[len(s.states)-1].Detail, "connection refused")
	})
	st := c.LinkStatus()
	if st.State != bridge.LinkConnecting || st.Reason != bridge.ReasonNetworkDown || !strings.Contains(st.Cause, "connection refused") {
		t.Errorf("status %+v, want connecting with one line saying WhatsApp cannot be reached", st)
	}
	// Reconnecting after a failure: the core logs it as a warning.
	if got := s.lastState(); got.State != bridge.StateDisconnected {
		t.Errorf("the core was told %+v, want disconnected", got)
	}
	waitUntil(t, "retries", func() bool { return w.net.dials.Load() >= 3 })
	w.net.Up()
	s.waitRelaying(t, 0)
	reports := 0
	for _, sc := range s.statesSince(0) {
		if strings.Contains(sc.Detail, "connection refused") {
			reports++
		}
	}
	if reports != 1 {
		t.Errorf("the unreachable network was reported %d times, want once", reports)
	}
	relays(t, w, s, "after the outage")
}

// TestStopWhileNetworkDown stops a link that is still dialling.
func TestStopWhileNetworkDown(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	r.linkedStopped(w)
	w.net.Down()
	c := r.openOnFake(w, "me", nil)
	s := r.start(c)
	s.waitFor(t, "connecting with the reason", func() bool {
		return len(s.states) > 0 && strings.Contains(s.states[len(s.states)-1].Detail, "cannot reach WhatsApp")
	})
	stopWithin(t, c)
	waitDone(t, &c.wg, "the dialling loop")
	if st := c.LinkStatus(); st.State != bridge.LinkStopped {
		t.Errorf("after Stop: %+v, want stopped", st)
	}
}

// waitDone waits for wg, failing the test after the bound.
func waitDone(t *testing.T, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitBound):
		t.Fatalf("%s did not end within %v", what, waitBound)
	}
}

// checkForgotten checks that c's link is gone: from the connector, from
// whatsmeow's store, and for a connector opened next.
func checkForgotten(t *testing.T, r *rig, c *Connector, devJID types.JID) {
	t.Helper()
	if st := c.LinkStatus(); st.State != bridge.LinkUnlinked || st.Account != (bridge.LinkAccount{}) {
		t.Errorf("status %+v, want unlinked with no account", st)
	}
	if dev, err := c.container.GetDevice(context.Background(), devJID); err != nil || dev != nil {
		t.Errorf("the device's keys are still stored (%v, %v)", dev, err)
	}
	if acct := r.open("me", nil).LinkStatus().Account; acct != (bridge.LinkAccount{}) {
		t.Errorf("a new connector is still linked to %+v", acct)
	}
}

// TestUnlinkInDaemon logs the running link out: the phone no longer lists
// the device, the keys are deleted, the link is forgotten.
func TestUnlinkInDaemon(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c, s := r.linkedOnFake(w, "me", nil)
	dev := *c.dev().ID
	clients := w.clientCount()

	if err := c.Unlink(context.Background(), false); err != nil {
		t.Fatalf("Unlink: %v", err)
	}
	if devs := w.ann.Companions(); len(devs) != 0 {
		t.Errorf("the phone still lists %v", devs)
	}
	if n := w.clientCount(); n != clients {
		t.Errorf("Unlink made a client (%d) though the daemon had one", n-clients)
	}
	checkForgotten(t, r, c, dev)
	waitUntil(t, "the unlinked client to hang up", func() bool { return !w.srv.Online(dev) })
	if got := s.lastState(); got.State != coreState(bridge.LinkUnlinked) {
		t.Errorf("the core was told %+v, want unlinked", got)
	}
	if _, err := c.Chats(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "not linked") {
		t.Errorf("Chats after unlinking: %v, want not linked", err)
	}
}

// TestUnlinkWithoutDaemon connects just to log out.
func TestUnlinkWithoutDaemon(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	r.linkedStopped(w)
	dev := companionOf(t, w.ann)
	c := r.openOnFake(w, "me", nil)
	if err := c.Unlink(context.Background(), false); err != nil {
		t.Fatalf("Unlink: %v", err)
	}
	if devs := w.ann.Companions(); len(devs) != 0 {
		t.Errorf("the phone still lists %v", devs)
	}
	waitUntil(t, "the client made to log out to hang up", func() bool { return !w.client(t, w.clientCount()).IsConnected() })
	checkForgotten(t, r, c, dev)
	// The lock went with it: a daemon can start.
	if err := r.open("me", nil).Start(context.Background(), newRecSink(r.store)); err != nil {
		t.Errorf("Start after unlinking: %v", err)
	}
}

// TestUnlinkLocalOnly forgets the keys without telling WhatsApp: the
// phone keeps listing the device until its owner removes it there.
func TestUnlinkLocalOnly(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	c, _ := r.linkedOnFake(w, "me", nil)
	dev := *c.dev().ID
	if err := c.Unlink(context.Background(), true); err != nil {
		t.Fatalf("Unlink(local): %v", err)
	}
	if devs := w.ann.Companions(); len(devs) != 1 || devs[0] != dev {
		t.Errorf("the phone lists %v, want the device still (WhatsApp was not told)", devs)
	}
	waitUntil(t, "the client to hang up", func() bool { return !w.srv.Online(dev) })
	checkForgotten(t, r, c, dev)
}

// TestUnlinkLocalWhileNetworkDown ends the dialling loop of the client
// whose keys were just deleted, rather than dialling on until Stop.
func TestUnlinkLocalWhileNetworkDown(t *testing.T) {
	t.Parallel()
	w := newWAWorld(t, fakewa.Options{})
	r := newRig(t)
	r.linkedStopped(w)
	w.net.Down()
	c := r.openOnFake(w, "me", nil)
	r.start(c)
	waitUntil(t, "a refused dial", func() bool { return w.net.dials.Load() >= 1 })
	if err := c.Unlink(context.Background(), true); err != nil {
		t.Fatalf("Unlink(local): %v", err)
	}
	waitDone(t, &c.wg, "the dialling loop of the unlinked client")
	if st := c.LinkStatus(); st.State != bridge.LinkUnlinked {
		t.Errorf("status %+v after the loop ended, want unlinked", st)
	}
}

// TestUnlinkFailures: unlinking what is not linked, with no network, and
// when WhatsApp does not answer the logout; the last two keep the link
// and point at --local.
func TestUnlinkFailures(t *testing.T) {
	t.Parallel()
	t.Run("not linked", func(t *testing.T) {
		r := newRig(t)
		c := r.open("me", nil)
		err := c.Unlink(context.Background(), false)
		if reason := linkReason(t, err); reason != bridge.LinkNotLinked {
			t.Errorf("Unlink: %v, want %q", err, bridge.LinkNotLinked)
		}
		if err := c.Unlink(context.Background(), true); err == nil {
			t.Error("Unlink(local) of an unlinked link succeeded")
		}
	})
	check := func(t *testing.T, w *waWorld, r *rig, c *Connector, err error, want bridge.LinkFailure) {
		t.Helper()
		var le *bridge.LinkError
		errors.As(err, &le)
		if reason := linkReason(t, err); reason != want || !strings.Contains(linktext.CLI.UnlinkFailure("me", le.Service, le), "`phonebridge unlink me --local`") {
			t.Errorf("Unlink: %v, want %q pointing at `phonebridge unlink me --local`", err, want)
		}
		if acct := c.LinkStatus().Account; acct.ID != w.ann.PN.String() {
			t.Errorf("a failed unlink left account %+v", acct)
		}
		if acct := r.open("me", nil).LinkStatus().Account; acct.ID != w.ann.PN.String() {
			t.Errorf("after a failed unlink a new connector is linked to %+v", acct)
		}
		if devs := w.ann.Companions(); len(devs) != 1 {
			t.Errorf("after a failed unlink the phone lists %v, want the device", devs)
		}
	}
	t.Run("network down", func(t *testing.T) {
		w := newWAWorld(t, fakewa.Options{})
		r := newRig(t)
		r.linkedStopped(w)
		w.net.Down()
		c := r.openOnFake(w, "me", nil)
		err := c.Unlink(context.Background(), false)
		check(t, w, r, c, err, bridge.LinkNetworkDown)
		if !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("Unlink: %v, want it to say why", err)
		}
	})
	t.Run("logout not answered", func(t *testing.T) {
		w := newWAWorld(t, fakewa.Options{})
		r := newRig(t)
		c, _ := r.linkedOnFake(w, "me", nil)
		w.srv.SetSilent(true)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := c.Unlink(ctx, false)
		// WhatsApp did not answer; it refused nothing.
		check(t, w, r, c, err, bridge.LinkLogoutFailed)
	})
}
