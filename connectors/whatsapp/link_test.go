package whatsapp

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
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/control"
	"github.com/phonebridge/phonebridge/config"
)

var annAccount = bridge.LinkAccount{
	ID:       "15550001111@s.whatsapp.net",
	Phone:    "+15550001111",
	PushName: "Ann",
	Platform: "android",
}

// checkExpires fails unless exp is lifetime after a moment between
// before and now: the code's lifetime counted from when it was shown.
func checkExpires(t *testing.T, exp, before time.Time, lifetime time.Duration) {
	t.Helper()
	if exp.Before(before.Add(lifetime)) || exp.After(time.Now().Add(lifetime)) {
		t.Errorf("Expires %v is not %v after the code was shown (between %v and now)", exp, lifetime, before)
	}
}

// TestLinkByQRInProcess links with no daemon (the CLI's case): codes rotate
// into progress, success returns the account and saves the link, the
// pairing client hangs up, and a restart connects without any QR code.
func TestLinkByQRInProcess(t *testing.T) {
	r := newRig(t)
	c := r.open("me", nil)
	p := newProgressLog()
	res := startLink(context.Background(), c, bridge.LinkOptions{}, p)

	cl := r.wa.client(t, 1)
	cl.waitConnected(t)
	r.wa.read(func() {
		if !cl.qrAsked {
			t.Error("Link connected without asking for the QR channel first")
		}
	})
	for _, code := range []struct {
		code    string
		timeout time.Duration
	}{{"2@first", 60 * time.Second}, {"2@second", 20 * time.Second}, {"2@third", 20 * time.Second}} {
		shown := time.Now()
		cl.code(code.code, code.timeout)
		lp := p.next(t)
		if lp.Kind != bridge.ProgressQR || lp.QR != code.code {
			t.Fatalf("progress %+v, want QR code %q", lp, code.code)
		}
		checkExpires(t, lp.Expires, shown, code.timeout)
	}
	cl.pair(t, "+15550001111", "Ann", "android")

	got := awaitLink(t, res)
	if got.err != nil {
		t.Fatalf("Link: %v", got.err)
	}
	if got.acct != annAccount {
		t.Errorf("Link returned %+v, want %+v", got.acct, annAccount)
	}
	st := c.LinkStatus()
	if st.Account != annAccount || st.State != bridge.LinkStopped || !strings.Contains(st.Detail, "start phonebridge") {
		t.Errorf("after linking in-process: status %+v, want stopped, linked to %+v, saying to start phonebridge", st, annAccount)
	}
	if cl.IsConnected() {
		t.Error("the pairing client stays connected with no daemon to relay its events")
	}
	// A message arriving before the client hung up is left for WhatsApp
	// to deliver again, to the daemon.
	ann := mustJID(t, "15550001111@s.whatsapp.net")
	if cl.deliver(waText(ann, ann, "EARLY1", "Ann", "hello")) {
		t.Error("a message that nothing relays was acknowledged to WhatsApp")
	}

	// The daemon's next start finds the device: no QR code, it connects.
	stopWithin(t, c)
	c2 := r.open("me", nil)
	if acct := c2.LinkStatus().Account; acct != annAccount {
		t.Fatalf("a new connector on the same store is linked to %+v, want %+v", acct, annAccount)
	}
	_, cl2 := r.startConnected(c2)
	if cl2 == cl {
		t.Fatal("the restarted connector reuses the pairing client")
	}
	r.wa.read(func() {
		if cl2.qrAsked {
			t.Error("the restarted connector asked for a QR code")
		}
	})
	if st := c2.LinkStatus(); st.State != bridge.LinkConnected || st.Account != annAccount {
		t.Errorf("after restart: %+v, want connected as %+v", st, annAccount)
	}
}

// TestLinkByQRInDaemon links a started connector: the pairing client
// becomes the link's client, connected, and its events relay at once.
func TestLinkByQRInDaemon(t *testing.T) {
	r := newRig(t)
	r.wa.groups = []*types.GroupInfo{{JID: mustJID(t, "120363000000000001@g.us"), GroupName: types.GroupName{Name: "Family"}}}
	c := r.open("me", nil)
	s := r.start(c)
	if st := c.LinkStatus(); st.State != bridge.LinkUnlinked {
		t.Fatalf("started unlinked: %+v, want unlinked", st)
	}
	if got := s.lastState(); got.State != coreState(bridge.LinkUnlinked) || !strings.Contains(got.Detail, "phonebridge link me") {
		t.Errorf("the core was told %+v for an unlinked link, want it to say to run `phonebridge link me`", got)
	}

	p := newProgressLog()
	res := startLink(context.Background(), c, bridge.LinkOptions{}, p)
	cl := r.wa.client(t, 1)
	cl.waitConnected(t)
	cl.code("2@only", 60*time.Second)
	if lp := p.next(t); lp.QR != "2@only" {
		t.Fatalf("progress %+v, want the QR code", lp)
	}
	cl.pair(t, "+15550001111", "Ann", "android")
	got := awaitLink(t, res)
	if got.err != nil || got.acct != annAccount {
		t.Fatalf("Link = %+v, %v; want %+v", got.acct, got.err, annAccount)
	}

	if cur, _ := c.current(); cur != cl {
		t.Error("the pairing client did not become the link's client")
	}
	if !cl.IsConnected() {
		t.Error("the linked client was disconnected")
	}
	if st := c.LinkStatus(); st.State != bridge.LinkConnected || st.Account != annAccount {
		t.Errorf("after linking in the daemon: %+v, want connected as %+v", st, annAccount)
	}
	if got := s.lastState(); got.State != bridge.StateConnected {
		t.Errorf("the core was last told %+v, want connected", got)
	}
	// Deliveries resume, and the group list loads so routes naming chats
	// resolve.
	s.waitFor(t, "Resume and ChatsChanged", func() bool { return s.resumes >= 1 && s.chatsChg >= 2 })
	if name := c.chats.chatName(context.Background(), mustJID(t, "120363000000000001@g.us")); name != "Family" {
		t.Errorf("group name %q after linking, want Family", name)
	}

	// Events relay at once, acknowledged only once taken.
	bob := mustJID(t, "15550002222@s.whatsapp.net")
	if !cl.deliver(waText(bob, bob, "MSG1", "Bob", "hi there")) {
		t.Fatal("a message relayed by the daemon was not acknowledged")
	}
	evs := s.eventList()
	if len(evs) != 1 || evs[0].ID != "MSG1" || evs[0].Text != "hi there" || evs[0].Chat.ID != bob.String() || evs[0].Sender.Name != "Bob" {
		t.Fatalf("relayed %+v, want Bob's message MSG1", evs)
	}

	stopWithin(t, c)
	if cl.IsConnected() {
		t.Error("Stop left the linked client connected")
	}
}

// TestLinkFailures maps each way pairing ends badly to its reason, and
// checks that a failed attempt leaves nothing behind.
func TestLinkFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script func(t *testing.T, cl *fakeClient, cancel context.CancelFunc)
		want   bridge.LinkFailure
		detail string
	}{
		{"timeout", func(t *testing.T, cl *fakeClient, _ context.CancelFunc) {
			cl.code("2@a", time.Second)
			cl.finish(whatsmeow.QRChannelTimeout)
		}, bridge.LinkTimedOut, ""},
		{"scanned without multidevice", func(t *testing.T, cl *fakeClient, _ context.CancelFunc) {
			cl.code("2@a", time.Second)
			cl.finish(whatsmeow.QRChannelScannedWithoutMultidevice)
		}, bridge.LinkNoMultidevice, ""},
		{"client outdated", func(t *testing.T, cl *fakeClient, _ context.CancelFunc) {
			cl.finish(whatsmeow.QRChannelClientOutdated)
		}, bridge.LinkOutdated, ""},
		{"pairing error item", func(t *testing.T, cl *fakeClient, _ context.CancelFunc) {
			cl.code("2@a", time.Second)
			cl.finish(whatsmeow.QRChannelItem{Event: whatsmeow.QRChannelEventError, Error: errors.New("device signature mismatch")})
		}, bridge.LinkFailed, "device signature mismatch"},
		{"pair error event", func(t *testing.T, cl *fakeClient, _ context.CancelFunc) {
			cl.code("2@a", time.Second)
			cl.deliver(&events.PairError{Error: errors.New("failed to store main device identity")})
		}, bridge.LinkFailed, "failed to store main device identity"},
		{"session closed", func(t *testing.T, cl *fakeClient, _ context.CancelFunc) {
			close(cl.qr)
		}, bridge.LinkFailed, "closed the pairing session"},
		{"unexpected state", func(t *testing.T, cl *fakeClient, _ context.CancelFunc) {
			cl.finish(whatsmeow.QRChannelErrUnexpectedEvent)
		}, bridge.LinkFailed, "err-unexpected-state"},
		{"cancelled (Ctrl-C)", func(t *testing.T, cl *fakeClient, cancel context.CancelFunc) {
			cl.code("2@a", time.Minute)
			cancel()
		}, bridge.LinkCancelled, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			c := r.open("me", nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			res := startLink(ctx, c, bridge.LinkOptions{}, newProgressLog())
			cl := r.wa.client(t, 1)
			cl.waitConnected(t)
			tc.script(t, cl, cancel)
			got := awaitLink(t, res)
			if got.err == nil {
				t.Fatalf("Link succeeded (%+v), want %q", got.acct, tc.want)
			}
			if reason := linkReason(t, got.err); reason != tc.want {
				t.Errorf("reason %q, want %q (error %v)", reason, tc.want, got.err)
			}
			if !strings.Contains(got.err.Error(), tc.detail) {
				t.Errorf("error %q does not say %q", got.err, tc.detail)
			}
			if cl.IsConnected() {
				t.Error("the failed pairing client stays connected")
			}
			if acct := c.LinkStatus().Account; acct != (bridge.LinkAccount{}) {
				t.Errorf("a failed link left account %+v", acct)
			}
			if devs, err := c.container.GetAllDevices(context.Background()); err != nil || len(devs) != 0 {
				t.Errorf("a failed link left devices %v (%v)", devs, err)
			}
			// Nothing is held: the user can run the command again at once.
			ctx2, cancel2 := context.WithCancel(context.Background())
			res2 := startLink(ctx2, c, bridge.LinkOptions{}, newProgressLog())
			r.wa.client(t, 2).waitConnected(t)
			cancel2()
			if reason := linkReason(t, awaitLink(t, res2).err); reason != bridge.LinkCancelled {
				t.Errorf("linking again after a failure: %q, want it to run (and be cancelled)", reason)
			}
		})
	}
}

// TestLinkNetworkDown keeps dialling while WhatsApp cannot be reached,
// says so in one line (not once per attempt), links once the network is
// back, and on Ctrl-C during the outage ends with the network as reason.
func TestLinkNetworkDown(t *testing.T) {
	t.Run("comes back", func(t *testing.T) {
		r := newRig(t)
		r.wa.connectFails = 2
		c := r.open("me", nil)
		p := newProgressLog()
		res := startLink(context.Background(), c, bridge.LinkOptions{}, p)
		info := p.next(t)
		if info.Kind != bridge.ProgressInfo || !strings.Contains(info.Message, "network is unreachable") || !strings.Contains(info.Message, "retrying") {
			t.Fatalf("first progress %+v, want one line saying WhatsApp cannot be reached and it retries", info)
		}
		cl := r.wa.client(t, 1)
		cl.waitConnected(t) // the third attempt gets through
		cl.code("2@after-outage", 60*time.Second)
		if lp := p.next(t); lp.Kind != bridge.ProgressQR || lp.QR != "2@after-outage" {
			t.Fatalf("after the outage: progress %+v, want the QR code (and no second outage line)", lp)
		}
		cl.pair(t, "+15550001111", "Ann", "android")
		if got := awaitLink(t, res); got.err != nil || got.acct != annAccount {
			t.Fatalf("Link after the outage: %+v, %v", got.acct, got.err)
		}
		r.wa.read(func() {
			if r.wa.connects != 3 {
				t.Errorf("%d connection attempts, want 3 (two failed, one through)", r.wa.connects)
			}
		})
	})
	t.Run("cancelled", func(t *testing.T) {
		r := newRig(t)
		r.wa.connectFails = 1 << 20
		c := r.open("me", nil)
		p := newProgressLog()
		ctx, cancel := context.WithCancel(context.Background())
		res := startLink(ctx, c, bridge.LinkOptions{}, p)
		if info := p.next(t); info.Kind != bridge.ProgressInfo {
			t.Fatalf("progress %+v, want the outage line", info)
		}
		cancel()
		got := awaitLink(t, res)
		if reason := linkReason(t, got.err); reason != bridge.LinkNetworkDown {
			t.Fatalf("reason %q, want %q", reason, bridge.LinkNetworkDown)
		}
		if !strings.Contains(got.err.Error(), "network is unreachable") {
			t.Errorf("error %q does not say why", got.err)
		}
	})
}

// TestLinkAlreadyLinked refuses to link a link that has a device.
func TestLinkAlreadyLinked(t *testing.T) {
	r := newRig(t)
	c := r.linked("me", "+15550001111", "Ann", nil)
	_, err := c.Link(context.Background(), bridge.LinkOptions{}, func(bridge.LinkProgress) { t.Error("progress while already linked") })
	if reason := linkReason(t, err); reason != bridge.LinkAlreadyLinked {
		t.Fatalf("reason %q, want %q", reason, bridge.LinkAlreadyLinked)
	}
	if !strings.Contains(err.Error(), "+15550001111") {
		t.Errorf("error %q does not say which account", err)
	}
	if n := r.wa.clientCount(); n != 0 {
		t.Errorf("%d clients made for a refused link", n)
	}
}

// TestLinkConcurrent refuses a second Link while one runs.
func TestLinkConcurrent(t *testing.T) {
	r := newRig(t)
	c := r.open("me", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := startLink(ctx, c, bridge.LinkOptions{}, newProgressLog())
	r.wa.client(t, 1).waitConnected(t)

	_, err := c.Link(context.Background(), bridge.LinkOptions{}, func(bridge.LinkProgress) {})
	if reason := linkReason(t, err); reason != bridge.LinkBusy {
		t.Fatalf("second Link: %q, want %q", reason, bridge.LinkBusy)
	}
	if n := r.wa.clientCount(); n != 1 {
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
	r := newRig(t)
	daemon := r.open("me", nil)
	r.start(daemon)

	cli := r.open("me", nil) // the same link, opened by another process
	_, err := cli.Link(context.Background(), bridge.LinkOptions{}, func(bridge.LinkProgress) {})
	if reason := linkReason(t, err); reason != bridge.LinkBusy {
		t.Fatalf("Link beside a running daemon: %q, want %q", reason, bridge.LinkBusy)
	}
	if n := r.wa.clientCount(); n != 0 {
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
	res := startLink(ctx, cli, bridge.LinkOptions{}, newProgressLog())
	r.wa.client(t, 1).waitConnected(t)
	late := r.open("me", nil)
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
	r := newRig(t)
	c := r.open("me", nil)

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
	res := startLink(ctx, c, bridge.LinkOptions{}, newProgressLog())
	r.wa.client(t, 1).waitConnected(t)
	cancel()
	if reason := linkReason(t, awaitLink(t, res).err); reason != bridge.LinkCancelled {
		t.Errorf("Link after the other process ended: %q, want it to run (and be cancelled)", reason)
	}
}

// TestLinkByPairingCode asks for the pairing code once the session is
// pairing (after the first QR code), reports it once, and links.
func TestLinkByPairingCode(t *testing.T) {
	r := newRig(t)
	c := r.open("me", nil)
	p := newProgressLog()
	res := startLink(context.Background(), c, bridge.LinkOptions{Phone: "+15550001111"}, p)
	cl := r.wa.client(t, 1)
	cl.waitConnected(t)
	r.wa.read(func() {
		if len(r.wa.pairPhones) != 0 {
			t.Errorf("pairing code asked for before the session was pairing: %v", r.wa.pairPhones)
		}
	})

	shown := time.Now()
	cl.code("2@a", 60*time.Second)
	lp := p.next(t)
	if lp.Kind != bridge.ProgressPairingCode || lp.PairingCode != "KJ7Q-W2ZP" || lp.QR != "" {
		t.Fatalf("progress %+v, want the pairing code KJ7Q-W2ZP and no QR code", lp)
	}
	checkExpires(t, lp.Expires, shown, pairingCodeLifetime)

	// The QR codes rotating underneath change nothing for the user.
	cl.code("2@b", 20*time.Second)
	cl.code("2@c", 20*time.Second)
	cl.pair(t, "+15550001111", "Ann", "android")
	got := awaitLink(t, res)
	if got.err != nil || got.acct != annAccount {
		t.Fatalf("Link = %+v, %v; want %+v", got.acct, got.err, annAccount)
	}
	r.wa.read(func() {
		if len(r.wa.pairPhones) != 1 || r.wa.pairPhones[0] != "+15550001111" {
			t.Errorf("PairPhone calls %q, want one for +15550001111", r.wa.pairPhones)
		}
	})
	if all := p.all(); len(all) != 1 {
		t.Errorf("progress %+v, want the pairing code alone", all)
	}
}

// TestLinkPairingCodeRefused reports WhatsApp refusing a pairing code.
func TestLinkPairingCodeRefused(t *testing.T) {
	r := newRig(t)
	r.wa.pairErr = whatsmeow.ErrPhoneNumberIsNotInternational
	c := r.open("me", nil)
	res := startLink(context.Background(), c, bridge.LinkOptions{Phone: "+05550001111"}, newProgressLog())
	cl := r.wa.client(t, 1)
	cl.waitConnected(t)
	cl.code("2@a", 60*time.Second)
	got := awaitLink(t, res)
	if reason := linkReason(t, got.err); reason != bridge.LinkFailed || !strings.Contains(got.err.Error(), "international") {
		t.Errorf("Link: %v, want a failure saying the number is not international", got.err)
	}
	if cl.IsConnected() {
		t.Error("the refused pairing client stays connected")
	}
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
	fakes := map[string]*fakeWA{"me": newFakeWA(), "work": newFakeWA()}
	for name, wa := range fakes {
		l, _ := b.Linker(name)
		l.(*Connector).newClient = wa.newClient
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
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
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()

	type linked struct {
		acct bridge.LinkAccount
		err  error
	}
	link := func(name string, p *progressLog) <-chan linked {
		res := make(chan linked, 1)
		go func() {
			acct, err := client.Link(ctx, name, bridge.LinkOptions{}, p.report)
			res <- linked{acct, err}
		}()
		return res
	}
	await := func(res <-chan linked) linked {
		t.Helper()
		select {
		case l := <-res:
			return l
		case <-time.After(waitBound):
			t.Fatal("the link stream did not end")
		}
		return linked{}
	}

	// Success: QR frames in order, then the account.
	p := newProgressLog()
	res := link("me", p)
	cl := fakes["me"].client(t, 1)
	cl.waitConnected(t)
	for _, code := range []string{"2@one", "2@two", "2@three"} {
		cl.code(code, 20*time.Second)
		if lp := p.next(t); lp.Kind != bridge.ProgressQR || lp.QR != code || lp.Expires.IsZero() {
			t.Fatalf("frame %+v, want QR code %q with its expiry", lp, code)
		}
	}
	cl.pair(t, "+15550001111", "Ann", "android")
	if l := await(res); l.err != nil || l.acct != annAccount {
		t.Fatalf("client Link = %+v, %v; want %+v", l.acct, l.err, annAccount)
	}
	links, err := client.Links(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != 2 || links[0].Name != "me" || links[0].State != bridge.LinkConnected || links[0].Account != annAccount {
		t.Errorf("links after linking: %+v, want me connected as %+v", links, annAccount)
	}
	if links[1].Name != "work" || links[1].State != bridge.LinkUnlinked {
		t.Errorf("links[1] = %+v, want workGroup unlinked", links[1])
	}

	// A timeout arrives on the client side as the same reason.
	res = link("work", newProgressLog())
	wcl := fakes["work"].client(t, 1)
	wcl.waitConnected(t)
	wcl.code("2@w", time.Second)
	wcl.finish(whatsmeow.QRChannelTimeout)
	l := await(res)
	var le *bridge.LinkError
	if !errors.As(l.err, &le) || le.Reason != bridge.LinkTimedOut {
		t.Fatalf("client Link error %v (%T), want a *bridge.LinkError timed out", l.err, l.err)
	}

	// So does refusing to link twice.
	l = await(link("me", newProgressLog()))
	if !errors.As(l.err, &le) || le.Reason != bridge.LinkAlreadyLinked {
		t.Errorf("linking a linked link: %v, want already linked", l.err)
	}
}
