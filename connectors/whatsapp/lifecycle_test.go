package whatsapp

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
)

// TestLifecycleStates feeds whatsmeow's connection events to a running
// link and checks what the link reports: its state, detail and since, the
// state the core is told, and the notices an operator must act on.
func TestLifecycleStates(t *testing.T) {
	r := newRig(t)
	c := r.linked("me", "+15550001111", "Ann", nil)
	s, cl := r.startConnected(c)
	if st := c.LinkStatus(); st.State != bridge.LinkConnected || st.Account != annAccount {
		t.Fatalf("started: %+v, want connected as %+v", st, annAccount)
	}
	s.waitFor(t, "deliveries resumed on connecting", func() bool { return s.resumes >= 1 })

	for _, step := range []struct {
		name   string
		evt    any
		state  bridge.LinkState
		detail string       // in LinkStatus().Detail
		core   bridge.State // what the core is told
		line   string       // in the line the core is told
		notice string       // in the one new notice; "" for none
		// sinceKept: the state did not change, so Since must not either.
		sinceKept bool
	}{
		{"disconnected", &events.Disconnected{}, bridge.LinkConnecting, "connection lost", bridge.StateDisconnected, "connection lost", "", false},
		{"connected", &events.Connected{}, bridge.LinkConnected, "", bridge.StateConnected, "", "", false},
		{"keep-alive timeout", &events.KeepAliveTimeout{ErrorCount: 1}, bridge.LinkPhoneOffline, "keep-alive", bridge.StateDisconnected, "keep-alive",
			"WhatsApp link 'me' cannot reach WhatsApp", false},
		{"keep-alive timeout again", &events.KeepAliveTimeout{ErrorCount: 2}, bridge.LinkPhoneOffline, "keep-alive", bridge.StateDisconnected, "keep-alive", "", true},
		{"keep-alive restored", &events.KeepAliveRestored{}, bridge.LinkConnected, "", bridge.StateConnected, "", "WhatsApp link 'me' is reachable again", false},
		{"keep-alive restored while connected", &events.KeepAliveRestored{}, bridge.LinkConnected, "", bridge.StateConnected, "", "", true},
		{"client outdated", &events.ClientOutdated{}, bridge.LinkClientOutdated, "client version", bridge.StateFailed, "update phonebridge",
			"because this phonebridge is outdated; update phonebridge", false},
		{"connected after an update", &events.Connected{}, bridge.LinkConnected, "", bridge.StateConnected, "", "", false},
		{"stream replaced", &events.StreamReplaced{}, bridge.LinkReplaced, "another client", bridge.StateFailed, "restart phonebridge",
			"WhatsApp link 'me' was taken over by another client", false},
	} {
		before := c.LinkStatus()
		notices := len(s.noticeList())
		states := len(s.states)
		if !cl.deliver(step.evt) {
			t.Errorf("%s: the handler did not take %T", step.name, step.evt)
		}
		st := c.LinkStatus()
		if st.State != step.state || !strings.Contains(st.Detail, step.detail) || !st.Until.IsZero() {
			t.Errorf("%s: status %+v, want %s with detail containing %q", step.name, st, step.state, step.detail)
		}
		if st.Account != annAccount {
			t.Errorf("%s: account %+v, want %+v", step.name, st.Account, annAccount)
		}
		switch {
		case step.sinceKept && !st.Since.Equal(before.Since):
			t.Errorf("%s: since moved from %v to %v though the state stayed %s", step.name, before.Since, st.Since, st.State)
		case !step.sinceKept && !st.Since.After(before.Since):
			t.Errorf("%s: since %v did not move on from %v when the state changed to %s", step.name, st.Since, before.Since, st.State)
		}
		if !step.sinceKept {
			got := s.lastState()
			if len(s.states) == states || got.State != step.core || !strings.Contains(got.Detail, step.line) {
				t.Errorf("%s: the core was told %+v, want %s with %q", step.name, got, step.core, step.line)
			}
		}
		added := s.noticeList()[notices:]
		switch {
		case step.notice == "" && len(added) > 0:
			t.Errorf("%s: unexpected notices %q", step.name, added)
		case step.notice != "" && (len(added) != 1 || !strings.Contains(added[0], step.notice)):
			t.Errorf("%s: notices %q, want one saying %q", step.name, added, step.notice)
		}
	}
}

// TestTemporaryBan reports a ban with its end, tells the operator, and
// connects again once the ban is over (whatsmeow does not).
func TestTemporaryBan(t *testing.T) {
	r := newRig(t)
	c := r.linked("me", "+15550001111", "Ann", nil)
	s, cl := r.startConnected(c)

	// A long ban, so nothing moves while it is checked.
	banned := time.Now()
	cl.drop()
	cl.deliver(&events.TemporaryBan{Code: events.TempBanSentToTooManyPeople, Expire: time.Hour})
	st := c.LinkStatus()
	if st.State != bridge.LinkBanned || !strings.Contains(st.Detail, "too many messages") {
		t.Errorf("status %+v, want temporarily banned with the reason", st)
	}
	if st.Until.Before(banned.Add(time.Hour)) || st.Until.After(time.Now().Add(time.Hour)) {
		t.Errorf("until %v, want an hour after the ban", st.Until)
	}
	if got := s.lastState(); got.State != coreState(bridge.LinkBanned) || !strings.Contains(got.Detail, st.Until.Format(time.RFC3339)) {
		t.Errorf("the core was told %+v, want the ban with its end %s", got, st.Until.Format(time.RFC3339))
	}
	notices := s.noticeList()
	if len(notices) != 1 || !strings.Contains(notices[0], "WhatsApp temporarily banned link 'me'") || !strings.Contains(notices[0], st.Until.Format(time.RFC1123)) {
		t.Errorf("notices %q, want one saying link 'me' is banned until %s", notices, st.Until.Format(time.RFC1123))
	}

	// A short one: when it is over the link connects again, and relays.
	connects := 0
	r.wa.read(func() { connects = cl.connects })
	cl.deliver(&events.TemporaryBan{Code: events.TempBanBlockedByUsers, Expire: 50 * time.Millisecond})
	s.waitFor(t, "connected again after the ban", func() bool {
		return len(s.states) > 0 && s.states[len(s.states)-1].State == bridge.StateConnected
	})
	r.wa.read(func() {
		if cl.connects <= connects {
			t.Errorf("connected without dialling again (%d Connect calls)", cl.connects)
		}
	})
	if st := c.LinkStatus(); st.State != bridge.LinkConnected || !st.Until.IsZero() {
		t.Errorf("after the ban: %+v, want connected with no end of ban", st)
	}
}

// TestConnectFailureRetries reports a refused connection as connecting,
// and then really connects again (whatsmeow does not for these).
func TestConnectFailureRetries(t *testing.T) {
	r := newRig(t)
	c := r.linked("me", "+15550001111", "Ann", nil)
	s, cl := r.startConnected(c)

	cl.drop()
	cl.deliver(&events.ConnectFailure{Reason: events.ConnectFailureReason(418), Message: "teapot"})
	st := c.LinkStatus()
	if st.State != bridge.LinkConnecting || !strings.Contains(st.Detail, "refused the connection") || !strings.Contains(st.Detail, "teapot") {
		t.Errorf("status %+v, want connecting, saying WhatsApp refused and why", st)
	}
	// Reconnecting after a failure: the core logs it as a warning.
	if got := s.lastState(); got.State != bridge.StateDisconnected {
		t.Errorf("the core was told %+v, want disconnected", got)
	}
	s.waitFor(t, "connected again after the refusal", func() bool {
		return len(s.states) > 0 && s.states[len(s.states)-1].State == bridge.StateConnected
	})
	if !cl.IsConnected() {
		t.Error("connected state without a connection")
	}

	// A logged-out failure is left to *events.LoggedOut.
	before := c.LinkStatus()
	cl.deliver(&events.ConnectFailure{Reason: events.ConnectFailureLoggedOut})
	if st := c.LinkStatus(); st.State != before.State || st.Detail != before.Detail {
		t.Errorf("a logged-out connect failure changed the status to %+v", st)
	}
}

// TestLoggedOut forgets the device when the phone removes it, tells the
// operator what to run, and leaves a restarted daemon unlinked.
func TestLoggedOut(t *testing.T) {
	r := newRig(t)
	c := r.linked("me", "+15550001111", "Ann", nil)
	s, cl := r.startConnected(c)
	changed := 0
	s.mu.Lock()
	changed = s.chatsChg
	s.mu.Unlock()

	if !cl.removeFromPhone(t) {
		t.Error("the handler did not take *events.LoggedOut")
	}
	st := c.LinkStatus()
	if st.State != bridge.LinkLoggedOut || st.Account != (bridge.LinkAccount{}) || !strings.Contains(st.Detail, "removed from the phone") {
		t.Errorf("status %+v, want logged out with no account", st)
	}
	if got := s.lastState(); got.State != coreState(bridge.LinkLoggedOut) || !strings.Contains(got.Detail, "phonebridge link me") {
		t.Errorf("the core was told %+v, want it to say to run `phonebridge link me`", got)
	}
	want := "WhatsApp link 'me' was logged out from the phone — run `phonebridge link me`"
	if notices := s.noticeList(); len(notices) != 1 || notices[0] != want {
		t.Errorf("notices %q, want %q", notices, want)
	}
	s.waitFor(t, "ChatsChanged", func() bool { return s.chatsChg > changed })
	r.wa.waitFor(t, "the logged-out client to be disconnected", func() bool { return cl.disconnects > 0 })
	if _, err := c.Send(context.Background(), &bridge.Outgoing{Event: bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{ID: "15550002222@s.whatsapp.net"}, Text: "hi"}, Key: "pb.1"}); err == nil || bridge.IsPermanent(err) {
		t.Errorf("Send after logout: %v, want a transient error (the event waits for a new link)", err)
	}

	// The link's record goes with the session whatsmeow deleted.
	var links int
	if err := r.store.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM whatsapp_links WHERE link = 'me'`).Scan(&links); err != nil || links != 0 {
		t.Errorf("%d link records left after the logout (%v)", links, err)
	}
	stopWithin(t, c)
	again := r.open("me", nil)
	if acct := again.LinkStatus().Account; acct != (bridge.LinkAccount{}) {
		t.Errorf("a new connector on the same store is linked to %+v after the logout", acct)
	}
	s2 := r.start(again)
	if st := again.LinkStatus(); st.State != bridge.LinkUnlinked {
		t.Errorf("restarted after logout: %+v, want unlinked", st)
	}
	if got := s2.lastState(); !strings.Contains(got.Detail, "phonebridge link me") {
		t.Errorf("restarted after logout, the core was told %+v", got)
	}
	if n := r.wa.clientCount(); n != 1 {
		t.Errorf("%d clients: the restarted connector made one with no device", n)
	}
}

// TestConnectRetriesWhileNetworkDown keeps dialling with backoff while
// WhatsApp cannot be reached, saying why in one line, and connects once it
// can.
func TestConnectRetriesWhileNetworkDown(t *testing.T) {
	r := newRig(t)
	r.wa.connectFails = 2
	c := r.linked("me", "+15550001111", "Ann", nil)
	s := r.start(c)
	cl := r.wa.client(t, 1)

	s.waitFor(t, "the reason in the state", func() bool {
		return len(s.states) > 0 && strings.Contains(s.states[len(s.states)-1].Detail, "network is unreachable")
	})
	st := c.LinkStatus()
	if st.State != bridge.LinkConnecting || !strings.Contains(st.Detail, "cannot reach WhatsApp") || strings.Contains(st.Detail, "\n") {
		t.Errorf("status %+v, want connecting with one line saying WhatsApp cannot be reached", st)
	}
	// Reconnecting after a failure: the core logs it as a warning.
	if got := s.lastState(); got.State != bridge.StateDisconnected {
		t.Errorf("the core was told %+v, want disconnected", got)
	}
	s.waitFor(t, "connected once the network is back", func() bool {
		return len(s.states) > 0 && s.states[len(s.states)-1].State == bridge.StateConnected
	})
	r.wa.read(func() {
		if cl.connects != 3 {
			t.Errorf("%d Connect calls, want 3 (two failed, one succeeded)", cl.connects)
		}
	})
	// The same failure twice is reported once.
	s.mu.Lock()
	reports := 0
	for _, sc := range s.states {
		if strings.Contains(sc.Detail, "network is unreachable") {
			reports++
		}
	}
	s.mu.Unlock()
	if reports != 1 {
		t.Errorf("the unreachable network was reported %d times, want once", reports)
	}
}

// TestStopWhileNetworkDown stops a link that is still dialling.
func TestStopWhileNetworkDown(t *testing.T) {
	r := newRig(t)
	r.wa.connectFails = 1 << 30
	c := r.linked("me", "+15550001111", "Ann", nil)
	s := r.start(c)
	cl := r.wa.client(t, 1)
	r.wa.waitFor(t, "a failed Connect", func() bool { return cl.connects >= 1 })
	s.waitFor(t, "connecting with the reason", func() bool {
		return len(s.states) > 0 && strings.Contains(s.states[len(s.states)-1].Detail, "cannot reach WhatsApp")
	})
	stopWithin(t, c) // Stop waits for the dialling loop: it must end
	if st := c.LinkStatus(); st.State != bridge.LinkStopped {
		t.Errorf("after Stop: %+v, want stopped", st)
	}
	if cl.IsConnected() {
		t.Error("connected after Stop")
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

// TestUnlinkInDaemon logs the running link out: WhatsApp is told, the keys
// are deleted, the link is forgotten.
func TestUnlinkInDaemon(t *testing.T) {
	r := newRig(t)
	c := r.linked("me", "+15550001111", "Ann", nil)
	s, cl := r.startConnected(c)
	devJID := *c.dev().ID

	if err := c.Unlink(context.Background(), false); err != nil {
		t.Fatalf("Unlink: %v", err)
	}
	r.wa.read(func() {
		if r.wa.logouts != 1 {
			t.Errorf("%d Logout calls, want 1", r.wa.logouts)
		}
	})
	if n := r.wa.clientCount(); n != 1 {
		t.Errorf("Unlink made a client (%d in all) though the daemon had one", n)
	}
	checkForgotten(t, r, c, devJID)
	if cl.IsConnected() {
		t.Error("the unlinked client stays connected")
	}
	if got := s.lastState(); got.State != coreState(bridge.LinkUnlinked) {
		t.Errorf("the core was told %+v, want unlinked", got)
	}
	if _, err := c.Chats(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "not linked") {
		t.Errorf("Chats after unlinking: %v, want not linked", err)
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

// TestUnlinkWithoutDaemon connects just to log out.
func TestUnlinkWithoutDaemon(t *testing.T) {
	r := newRig(t)
	c := r.linked("me", "+15550001111", "Ann", nil)
	devJID := *c.dev().ID
	if err := c.Unlink(context.Background(), false); err != nil {
		t.Fatalf("Unlink: %v", err)
	}
	cl := r.wa.client(t, 1)
	r.wa.read(func() {
		if cl.connects != 1 || r.wa.logouts != 1 {
			t.Errorf("%d Connect and %d Logout calls, want one each", cl.connects, r.wa.logouts)
		}
	})
	if cl.IsConnected() {
		t.Error("the client made to log out stays connected")
	}
	checkForgotten(t, r, c, devJID)
	// The lock went with it: a daemon can start.
	if err := r.open("me", nil).Start(context.Background(), newRecSink(r.store)); err != nil {
		t.Errorf("Start after unlinking: %v", err)
	}
}

// TestUnlinkLocalOnly forgets the keys without telling WhatsApp.
func TestUnlinkLocalOnly(t *testing.T) {
	r := newRig(t)
	c := r.linked("me", "+15550001111", "Ann", nil)
	_, cl := r.startConnected(c)
	devJID := *c.dev().ID
	if err := c.Unlink(context.Background(), true); err != nil {
		t.Fatalf("Unlink(local): %v", err)
	}
	r.wa.read(func() {
		if r.wa.logouts != 0 {
			t.Errorf("%d Logout calls for a local unlink", r.wa.logouts)
		}
	})
	if cl.IsConnected() {
		t.Error("the client stays connected after a local unlink")
	}
	checkForgotten(t, r, c, devJID)
}

// TestUnlinkLocalWhileNetworkDown ends the dialling loop of the client
// whose keys were just deleted, rather than dialling on until Stop.
func TestUnlinkLocalWhileNetworkDown(t *testing.T) {
	r := newRig(t)
	r.wa.connectFails = 1 << 30
	c := r.linked("me", "+15550001111", "Ann", nil)
	r.start(c)
	cl := r.wa.client(t, 1)
	r.wa.waitFor(t, "a failed Connect", func() bool { return cl.connects >= 1 })
	if err := c.Unlink(context.Background(), true); err != nil {
		t.Fatalf("Unlink(local): %v", err)
	}
	waitDone(t, &c.wg, "the dialling loop of the unlinked client")
	if st := c.LinkStatus(); st.State != bridge.LinkUnlinked {
		t.Errorf("status %+v after the loop ended, want unlinked", st)
	}
}

// TestUnlinkFailures: unlinking what is not linked, with no network, and
// when WhatsApp refuses; the last two keep the link and point at --local.
func TestUnlinkFailures(t *testing.T) {
	t.Run("not linked", func(t *testing.T) {
		r := newRig(t)
		c := r.open("me", nil)
		err := c.Unlink(context.Background(), false)
		if err == nil || !strings.Contains(err.Error(), "me is not linked") {
			t.Errorf("Unlink: %v, want an error saying me is not linked", err)
		}
		if err := c.Unlink(context.Background(), true); err == nil {
			t.Error("Unlink(local) of an unlinked link succeeded")
		}
	})
	for _, tc := range []struct {
		name   string
		script func(wa *fakeWA)
		want   bridge.LinkFailure
	}{
		{"network down", func(wa *fakeWA) { wa.connectFails = 1 }, bridge.LinkNetworkDown},
		{"logout refused", func(wa *fakeWA) { wa.logoutErr = context.DeadlineExceeded }, bridge.LinkFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			tc.script(r.wa)
			c := r.linked("me", "+15550001111", "Ann", nil)
			err := c.Unlink(context.Background(), false)
			if reason := linkReason(t, err); reason != tc.want || !strings.Contains(err.Error(), "phonebridge unlink me --local") {
				t.Errorf("Unlink: %v, want %q pointing at `phonebridge unlink me --local`", err, tc.want)
			}
			if acct := c.LinkStatus().Account; acct != annAccount {
				t.Errorf("a failed unlink left account %+v, want %+v", acct, annAccount)
			}
			if acct := r.open("me", nil).LinkStatus().Account; acct != annAccount {
				t.Errorf("after a failed unlink a new connector is linked to %+v", acct)
			}
		})
	}
}
