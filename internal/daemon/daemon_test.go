package daemon_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/control"
	"github.com/phonebridge/phonebridge/config"
	_ "github.com/phonebridge/phonebridge/connectors/api"
	_ "github.com/phonebridge/phonebridge/connectors/whatsapp"
	"github.com/phonebridge/phonebridge/internal/daemon"
	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/fakephone"
)

// The links these tests drive are fakephone connectors.
type (
	phone      = fakephone.Phone
	linkScript = fakephone.LinkScript
)

var linkedAcc = fakephone.LinkedAccount

func newPhone(t *testing.T) *phone { return fakephone.New(t, t0) }

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// wait bounds every wait for the daemon or a fake; none is expected to
// take more than a fraction of it.
const wait = 10 * time.Second

const apiToken = "test-token-0123456789"

// shortDir is a directory short enough for a unix socket path in it.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// loadConfig writes and loads a config with the fakephone connector "me"
// for p, an api connector "chat-api" (not a link) and more connectors.
func loadConfig(t *testing.T, p *phone, more string) *config.Config {
	t.Helper()
	path := filepath.Join(shortDir(t), "phonebridge.yaml")
	y := fmt.Sprintf(`state_dir: ./state
connectors:
  me:
    type: fakephone
    phone: %s
  chat-api:
    type: api
    listen: 127.0.0.1:0
    token: %s
%s`, p.Key(), apiToken, more)
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// logBuf keeps a daemon's log to show when a test fails.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testLogger(t *testing.T) *slog.Logger {
	logs := &logBuf{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	return slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// runningDaemon is daemon.Run in a goroutine of the test.
type runningDaemon struct {
	cancel   context.CancelFunc
	done     chan struct{}
	err      error
	stopOnce sync.Once
}

// startDaemon runs the daemon on cfg until the test ends or stop.
func startDaemon(t *testing.T, cfg *config.Config) *runningDaemon {
	t.Helper()
	logs := &logBuf{}
	ready := make(chan struct{})
	var once sync.Once
	log := slog.New(daemontest.OnReady(
		slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}),
		func() { once.Do(func() { close(ready) }) },
	))
	ctx, cancel := context.WithCancel(context.Background())
	d := &runningDaemon{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		d.err = daemon.Run(ctx, cfg, log, "test-version")
	}()
	t.Cleanup(func() {
		if err := d.stop(t); err != nil {
			t.Errorf("the daemon stopped with %v", err)
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs.String())
		}
	})
	select {
	case <-ready:
		return d
	case <-d.done:
		t.Fatalf("the daemon returned before it was ready: %v\n%s", d.err, logs.String())
	case <-time.After(wait):
		t.Fatalf("the daemon was not ready after %s:\n%s", wait, logs.String())
	}
	return nil
}

// stop cancels Run's context and returns what Run returned, which it
// must within StopTimeout.
func (d *runningDaemon) stop(t *testing.T) error {
	t.Helper()
	d.stopOnce.Do(func() {
		d.cancel()
		select {
		case <-d.done:
		case <-time.After(daemon.StopTimeout + time.Second):
			t.Fatalf("Run did not return within %s of its context ending", daemon.StopTimeout+time.Second)
		}
	})
	return d.err
}

func connect(t *testing.T, cfg *config.Config, wantRunning bool) daemon.API {
	t.Helper()
	api, running, err := daemon.Connect(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := api.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if running != wantRunning {
		t.Fatalf("Connect says running=%v, want %v", running, wantRunning)
	}
	return api
}

// withEachAPI runs f against the running daemon's API ("remote") and
// against the connectors opened in the test ("local"), each with its own
// phone and config, and returns what f returned for each.
func withEachAPI(t *testing.T, more string, f func(t *testing.T, api daemon.API, p *phone) any) (remote, local any) {
	t.Run("remote", func(t *testing.T) {
		p := newPhone(t)
		cfg := loadConfig(t, p, more)
		startDaemon(t, cfg)
		remote = f(t, connect(t, cfg, true), p)
	})
	t.Run("local", func(t *testing.T) {
		p := newPhone(t)
		cfg := loadConfig(t, p, more)
		local = f(t, connect(t, cfg, false), p)
	})
	return remote, local
}

func TestRunServesUntilCancelledThenLeavesTheLocalAPI(t *testing.T) {
	p := newPhone(t)
	cfg := loadConfig(t, p, "")
	d := startDaemon(t, cfg)
	ctx := context.Background()

	remote := connect(t, cfg, true)
	fi, err := os.Lstat(daemon.SocketPath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the control socket is %v, want a socket with mode 0600", fi.Mode())
	}
	want := []bridge.LinkStatus{{Name: "me", State: bridge.LinkConnected, Since: t0, Account: linkedAcc}}
	got, err := remote.Links(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the daemon's links:\n got  %+v\n want %+v", got, want)
	}
	if _, _, events := p.Recorded(); !reflect.DeepEqual(events, []string{"new", "start"}) {
		t.Fatalf("the connector saw %v, want it built and started", events)
	}

	if err := d.stop(t); err != nil {
		t.Fatalf("Run returned %v after its context ended, want nil", err)
	}
	if _, err := os.Lstat(daemon.SocketPath(cfg)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the control socket is still there after Run returned: %v", err)
	}
	if _, _, events := p.Recorded(); !reflect.DeepEqual(events, []string{"new", "start", "stop"}) {
		t.Fatalf("the connector saw %v, want it stopped", events)
	}
	if _, err := remote.Links(ctx); !errors.Is(err, control.ErrNotRunning) {
		t.Fatalf("the stopped daemon's client says %v, want ErrNotRunning", err)
	}

	local := connect(t, cfg, false)
	got, err = local.Links(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the local links:\n got  %+v\n want %+v", got, want)
	}
	if _, _, events := p.Recorded(); !reflect.DeepEqual(events, []string{"new", "start", "stop", "new"}) {
		t.Fatalf("the connector saw %v; the local API must build it without starting it", events)
	}
}

func TestConnectTreatsAStaleSocketAsNotRunning(t *testing.T) {
	cfg := loadConfig(t, newPhone(t), "")
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: daemon.SocketPath(cfg), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false) // as a killed daemon leaves it
	ln.Close()
	api := connect(t, cfg, false)
	if _, err := api.Links(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestASecondDaemonOnTheStateDirFailsAndStopsItsConnectors(t *testing.T) {
	p := newPhone(t)
	cfg := loadConfig(t, p, "")
	startDaemon(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	err := daemon.Run(ctx, cfg, testLogger(t), "second")
	if err == nil || !strings.Contains(err.Error(), "another phonebridge is running") {
		t.Fatalf("the second Run returned %v", err)
	}
	if _, _, events := p.Recorded(); !reflect.DeepEqual(events, []string{"new", "start", "new", "start", "stop"}) {
		t.Fatalf("the connectors saw %v; the second daemon must stop what it started", events)
	}
	// The first daemon still answers.
	connect(t, cfg, true)
}

var (
	qr1  = bridge.LinkProgress{Kind: bridge.ProgressQR, QR: "2@first,code", Expires: t0.Add(60 * time.Second)}
	qr2  = bridge.LinkProgress{Kind: bridge.ProgressQR, QR: "2@second,code", Expires: t0.Add(80 * time.Second)}
	info = bridge.LinkProgress{Kind: bridge.ProgressWaiting, Reason: bridge.ReasonNetworkDown, Cause: "no route to host"}
	pair = bridge.LinkProgress{Kind: bridge.ProgressPairingCode, PairingCode: "ABCDEFGH", Expires: t0.Add(3 * time.Minute)}
	bea  = bridge.LinkAccount{ID: "15559876543@s.whatsapp.net", Handle: "+15559876543", Name: "Bea", Device: "iphone"}
)

// succeed shows steps, or the pairing code when asked for one, and links bea.
func succeed(steps ...bridge.LinkProgress) linkScript {
	return func(ctx context.Context, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
		if opts.Phone != "" {
			progress(pair)
			return bea, nil
		}
		for _, s := range steps {
			progress(s)
		}
		return bea, nil
	}
}

type linkRun struct {
	Progress []bridge.LinkProgress
	Account  bridge.LinkAccount
	Err      string
	Opts     []bridge.LinkOptions
	Links    []bridge.LinkStatus
}

func TestLinkStreamsProgressAndTheAccount(t *testing.T) {
	remote, local := withEachAPI(t, "", func(t *testing.T, api daemon.API, p *phone) any {
		ctx := context.Background()
		p.SetStatus(bridge.LinkStatus{State: bridge.LinkUnlinked, Since: t0})
		p.SetLink(succeed(qr1, qr2, info))
		var r linkRun
		acct, err := api.Link(ctx, "me", bridge.LinkOptions{}, func(pr bridge.LinkProgress) { r.Progress = append(r.Progress, pr) })
		if err != nil {
			t.Fatal(err)
		}
		r.Account = acct
		if want := []bridge.LinkProgress{qr1, qr2, info}; !reflect.DeepEqual(r.Progress, want) {
			t.Fatalf("progress:\n got  %+v\n want %+v", r.Progress, want)
		}
		if acct != bea {
			t.Fatalf("linked %+v, want %+v", acct, bea)
		}
		if r.Links, err = api.Links(ctx); err != nil {
			t.Fatal(err)
		}
		if r.Links[0].Account != bea {
			t.Fatalf("after linking the link shows %+v", r.Links[0])
		}
		_, err = api.Link(ctx, "me", bridge.LinkOptions{Phone: "+1 (555) 123-4567"}, func(pr bridge.LinkProgress) { r.Progress = append(r.Progress, pr) })
		if err != nil {
			t.Fatal(err)
		}
		if last := r.Progress[len(r.Progress)-1]; last != pair {
			t.Fatalf("by phone the last progress is %+v, want the pairing code", last)
		}
		_, err = api.Link(ctx, "me", bridge.LinkOptions{Phone: "555-CALL-NOW"}, nil)
		if err == nil {
			t.Fatal("a phone that is not a number was taken")
		}
		r.Err = err.Error()
		r.Opts, _, _ = p.Recorded()
		return r
	})
	if !reflect.DeepEqual(remote, local) {
		t.Fatalf("the daemon and the local API differ:\n remote %+v\n local  %+v", remote, local)
	}
	r := remote.(linkRun)
	if want := []bridge.LinkOptions{{}, {Phone: "+15551234567"}}; !reflect.DeepEqual(r.Opts, want) {
		t.Errorf("the connector was asked to link with %+v, want %+v (a bad phone never reaches it)", r.Opts, want)
	}
	if !strings.Contains(r.Err, "+15551234567") || strings.Contains(r.Err, "\n") {
		t.Errorf("a bad phone gives %q; it should be one line showing how to write it", r.Err)
	}
}

func TestLinkFailureReasonsSurviveTheSocket(t *testing.T) {
	reasons := bridge.LinkFailures
	remote, local := withEachAPI(t, "", func(t *testing.T, api daemon.API, p *phone) any {
		var got []bridge.LinkError
		for _, reason := range reasons {
			for _, cause := range []string{"", "cause of " + string(reason)} {
				want := bridge.LinkError{Reason: reason, Service: "WhatsApp", Cause: cause}
				if reason == bridge.LinkAlreadyLinked {
					want.Account = &bea
				}
				p.SetLink(func(ctx context.Context, _ bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
					progress(qr1)
					return bridge.LinkAccount{}, &want
				})
				_, err := api.Link(context.Background(), "me", bridge.LinkOptions{}, nil)
				var le *bridge.LinkError
				if !errors.As(err, &le) {
					t.Fatalf("%s: got %v (%T), want a *bridge.LinkError", reason, err, err)
				}
				if !reflect.DeepEqual(*le, want) {
					t.Errorf("got %+v, want %+v", *le, want)
				}
				got = append(got, *le)
			}
		}
		// A connector's plain error is a failure with it as the detail.
		p.SetLink(func(context.Context, bridge.LinkOptions, func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
			return bridge.LinkAccount{}, errors.New("the phone fell in a lake")
		})
		_, err := api.Link(context.Background(), "me", bridge.LinkOptions{}, nil)
		var le *bridge.LinkError
		if !errors.As(err, &le) {
			t.Fatalf("a plain error came back as %v (%T), want a *bridge.LinkError", err, err)
		}
		return append(got, *le)
	})
	if !reflect.DeepEqual(remote, local) {
		t.Fatalf("the daemon and the local API differ:\n remote %+v\n local  %+v", remote, local)
	}
	all := remote.([]bridge.LinkError)
	if last := all[len(all)-1]; last != (bridge.LinkError{Reason: bridge.LinkFailed, Cause: "the phone fell in a lake"}) {
		t.Errorf("a plain error became %+v", last)
	}
}

func TestCancellingTheCallerCancelsTheLink(t *testing.T) {
	withEachAPI(t, "", func(t *testing.T, api daemon.API, p *phone) any {
		ended := make(chan error, 1)
		p.SetLink(func(ctx context.Context, _ bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
			progress(qr1)
			select {
			case <-ctx.Done():
				ended <- ctx.Err()
			case <-time.After(wait):
				ended <- errors.New("the link was never cancelled")
			}
			return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkCancelled}
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		_, err := api.Link(ctx, "me", bridge.LinkOptions{}, func(bridge.LinkProgress) { cancel() })
		var le *bridge.LinkError
		if !errors.As(err, &le) || le.Reason != bridge.LinkCancelled {
			t.Fatalf("a cancelled link returned %v, want LinkCancelled", err)
		}
		select {
		case err := <-ended:
			if !errors.Is(err, context.Canceled) {
				t.Fatal(err)
			}
		case <-time.After(wait):
			t.Fatal("the connector's Link did not return")
		}
		return nil
	})
}

type listRun struct {
	Links        []bridge.LinkStatus
	Chats        map[string][]bridge.ChatInfo
	UnlinkLocal  error
	AfterUnlink  []bridge.LinkStatus
	UnlinkAgain  string
	UnlinkServer error
	Unlinks      []bool
}

func TestLinksChatsAndUnlinkAgreeWithAndWithoutTheDaemon(t *testing.T) {
	remote, local := withEachAPI(t, "", func(t *testing.T, api daemon.API, p *phone) any {
		ctx := context.Background()
		r := listRun{Chats: map[string][]bridge.ChatInfo{}}
		var err error
		if r.Links, err = api.Links(ctx); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{"", "fam", "FRIENDS", "@g.us", "5550001111", "nobody"} {
			chats, err := api.Chats(ctx, "me", q)
			if err != nil {
				t.Fatal(err)
			}
			if len(chats) == 0 {
				chats = nil // the socket sends [] where the connector said nil
			}
			r.Chats[q] = chats
		}
		r.UnlinkLocal = api.Unlink(ctx, "me", true)
		if r.AfterUnlink, err = api.Links(ctx); err != nil {
			t.Fatal(err)
		}
		var le *bridge.LinkError
		if err := api.Unlink(ctx, "me", true); errors.As(err, &le) {
			r.UnlinkAgain = string(le.Reason)
		}
		p.SetStatus(bridge.LinkStatus{State: bridge.LinkConnected, Since: t0, Account: linkedAcc})
		r.UnlinkServer = api.Unlink(ctx, "me", false)
		_, r.Unlinks, _ = p.Recorded()
		return r
	})
	if !reflect.DeepEqual(remote, local) {
		t.Fatalf("the daemon and the local API differ:\n remote %+v\n local  %+v", remote, local)
	}
	r := remote.(listRun)
	if want := []bridge.LinkStatus{{Name: "me", State: bridge.LinkConnected, Since: t0, Account: linkedAcc}}; !reflect.DeepEqual(r.Links, want) {
		t.Errorf("links %+v, want %+v", r.Links, want)
	}
	names := func(cs []bridge.ChatInfo) (out []string) {
		for _, c := range cs {
			out = append(out, c.Name)
		}
		return out
	}
	for q, want := range map[string][]string{
		"":           {"Bob", "Family", "Football friends"},
		"fam":        {"Family"},
		"FRIENDS":    {"Football friends"},
		"@g.us":      {"Family", "Football friends"},
		"5550001111": {"Bob"},
		"nobody":     nil,
	} {
		if got := names(r.Chats[q]); !reflect.DeepEqual(got, want) {
			t.Errorf("chats %q: %v, want %v", q, got, want)
		}
	}
	if !r.Chats["fam"][0].Group || r.Chats["5550001111"][0].Group || r.Chats["fam"][0].ID != "120363000000000001@g.us" {
		t.Errorf("chats lost their ids or kinds: %+v", r.Chats)
	}
	if r.UnlinkLocal != nil || r.UnlinkServer != nil {
		t.Errorf("unlink: %v, %v", r.UnlinkLocal, r.UnlinkServer)
	}
	if r.AfterUnlink[0].State != bridge.LinkUnlinked {
		t.Errorf("after unlinking: %+v", r.AfterUnlink)
	}
	if r.UnlinkAgain != string(bridge.LinkNotLinked) {
		t.Errorf("unlinking an unlinked link says %q", r.UnlinkAgain)
	}
	if want := []bool{true, true, false}; !reflect.DeepEqual(r.Unlinks, want) {
		t.Errorf("the connector was asked to unlink with localOnly %v, want %v", r.Unlinks, want)
	}
}

func TestANameThatIsNotALinkIsAClearError(t *testing.T) {
	withEachAPI(t, "", func(t *testing.T, api daemon.API, p *phone) any {
		ctx := context.Background()
		var msgs []string
		for _, name := range []string{"nope", "chat-api"} {
			_, lerr := api.Link(ctx, name, bridge.LinkOptions{}, nil)
			uerr := api.Unlink(ctx, name, false)
			_, cerr := api.Chats(ctx, name, "")
			for what, err := range map[string]error{"link": lerr, "unlink": uerr, "chats": cerr} {
				if err == nil {
					t.Fatalf("%s %s: no error", what, name)
				}
				msg := err.Error()
				if !strings.Contains(msg, `"`+name+`"`) || strings.Contains(msg, "\n") {
					t.Errorf("%s %s: %q should be one line naming %q", what, name, msg, name)
				}
				if what != "chats" && !strings.Contains(msg, "`phonebridge links`") {
					t.Errorf("%s %s: %q does not say where the links are listed", what, name, msg)
				}
				var le *bridge.LinkError
				if errors.As(err, &le) {
					t.Errorf("%s %s: %q is a link failure; nothing was linked or not", what, name, msg)
				}
				msgs = append(msgs, what+" "+name+": "+msg)
			}
		}
		if opts, unlinks, _ := p.Recorded(); len(opts) != 0 || len(unlinks) != 0 {
			t.Errorf("the link \"me\" was driven: %v %v", opts, unlinks)
		}
		t.Logf("errors:\n%s", strings.Join(msgs, "\n"))
		return nil
	})
}

// sockets counts this process's open sockets, or -1 where /proc is not.
func sockets(t *testing.T) int {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}

func TestLocalLinksOpensConnectorsWithoutStartingThem(t *testing.T) {
	// Hold the api connector's port: starting it would fail.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	p := newPhone(t)
	cfg := loadConfig(t, p, fmt.Sprintf(`  held-api:
    type: api
    listen: %s
  phone:
    type: whatsapp
`, held.Addr()))

	before := sockets(t)
	api, running, err := daemon.Connect(cfg, testLogger(t))
	if err != nil || running {
		t.Fatalf("Connect: %v, running=%v", err, running)
	}
	links, err := api.Links(context.Background())
	if err != nil {
		t.Fatalf("links with an api and an unlinked whatsapp connector: %v", err)
	}
	if after := sockets(t); after != before {
		t.Errorf("listing links opened %d socket(s)", after-before)
	}
	if err := api.Close(); err != nil {
		t.Fatalf("closing connectors that never started: %v", err)
	}

	if len(links) != 2 || links[0].Name != "me" || links[1].Name != "phone" {
		t.Fatalf("links %+v, want me and phone (the api connectors do not link)", links)
	}
	if wa := links[1]; wa.State != bridge.LinkUnlinked || wa.Account.ID != "" {
		t.Errorf("the unlinked whatsapp link shows as %+v, want state unlinked", wa)
	}
	if _, _, events := p.Recorded(); !reflect.DeepEqual(events, []string{"new", "stop"}) {
		t.Errorf("the fake saw %v, want built and released, never started", events)
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "api-media")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the api connector prepared its media directory, so it was started: %v", err)
	}
}

// TestAnOlderDaemonIsNotBypassed: a daemon of an older control protocol
// answers on the socket. The CLI must say to restart it, and must not
// open the links in-process as if none ran: two processes would drive
// one device.
func TestAnOlderDaemonIsNotBypassed(t *testing.T) {
	p := newPhone(t)
	cfg := loadConfig(t, p, "")
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", daemon.SocketPath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"version": "0.9.0"}`)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	api, running, err := daemon.Connect(cfg, nil)
	if api != nil || running || !errors.Is(err, control.ErrProtocol) || !strings.Contains(err.Error(), "restart the daemon") {
		t.Fatalf("Connect beside a protocol-1 daemon: %v, %v, %v; want ErrProtocol saying to restart it", api, running, err)
	}
}
