package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
)

type linkFunc func(ctx context.Context, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error)

type fakeLinker struct {
	status    bridge.LinkStatus
	link      linkFunc
	unlinkErr error

	mu          sync.Mutex
	unlinks     []bool
	backfills   []string // "chat count"
	backfillErr error
}

func (l *fakeLinker) Backfill(ctx context.Context, chat string, count int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.backfills = append(l.backfills, fmt.Sprintf("%s %d", chat, count))
	return l.backfillErr
}

func (l *fakeLinker) LinkStatus() bridge.LinkStatus { return l.status }

func (l *fakeLinker) Link(ctx context.Context, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
	return l.link(ctx, opts, progress)
}

func (l *fakeLinker) Unlink(ctx context.Context, localOnly bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unlinks = append(l.unlinks, localOnly)
	return l.unlinkErr
}

type fakeLister []bridge.ChatInfo

func (f fakeLister) Chats(ctx context.Context, search string) ([]bridge.ChatInfo, error) {
	var out []bridge.ChatInfo
	for _, c := range f {
		if strings.Contains(c.Name, search) {
			out = append(out, c)
		}
	}
	return out, nil
}

type fakeBackend struct {
	linkers map[string]*fakeLinker
	listers map[string]bridge.ChatLister
	// reload is what Reload answers.
	reload    ReloadReport
	reloadErr error
}

func (b *fakeBackend) Status(ctx context.Context) (StatusReport, error) {
	return StatusReport{Version: "1.2.3-test", Config: "/etc/phonebridge/config.yaml", Links: b.Links(),
		Outbox: []bridge.QueueStatus{{Connector: "irc", Chat: "#family", Depth: 3, Attempts: 2, LastError: "connection refused"}}}, nil
}

func (b *fakeBackend) Reload(ctx context.Context) (ReloadReport, error) {
	return b.reload, b.reloadErr
}

func (b *fakeBackend) Links() []bridge.LinkStatus {
	var out []bridge.LinkStatus
	for _, name := range []string{"wa", "wa2"} {
		if l, ok := b.linkers[name]; ok {
			out = append(out, l.status)
		}
	}
	return out
}

func (b *fakeBackend) Linker(name string) (bridge.Linker, bool) {
	l, ok := b.linkers[name]
	return l, ok
}

func (b *fakeBackend) ChatLister(name string) (bridge.ChatLister, bool) {
	l, ok := b.listers[name]
	return l, ok
}

func (b *fakeBackend) Version() string { return "1.2.3-test" }

// shortDir is a state_dir short enough for a unix socket path.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pbctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func listen(t *testing.T, path string, b Backend) *Server {
	t.Helper()
	s, err := Listen(path, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// start serves b and dials it.
func start(t *testing.T, b Backend) (*Server, *Client, string) {
	t.Helper()
	path := filepath.Join(shortDir(t), "control.sock")
	s := listen(t, path, b)
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	return s, c, path
}

// recv waits for a value a fake reports from the server's side.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for the fake")
		panic("unreachable")
	}
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

var account = bridge.LinkAccount{ID: "15551234567@s.whatsapp.net", Handle: "+15551234567", Name: "Ann", Device: "android"}

func TestSocketMode(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "control.sock")
	listen(t, path, &fakeBackend{})
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want a 0600 socket", fi.Mode())
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"control.sock", "control.sock.lock"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("state_dir holds %v, want %v", names, want)
	}
}

// staleSocket leaves a socket file at path that nothing listens on.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
}

func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(shortDir(t), "control.sock")
	staleSocket(t, path)
	if _, err := Dial(path); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Dial on a stale socket: %v, want ErrNotRunning", err)
	}
	listen(t, path, &fakeBackend{})
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := c.Version(context.Background()); err != nil || v != "1.2.3-test" {
		t.Fatalf("Version = %q, %v", v, err)
	}
}

func TestLiveSocketRefused(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "control.sock")
	want := fmt.Sprintf("another phonebridge is running with this state_dir (%s)", dir)

	s := listen(t, path, &fakeBackend{})
	if _, err := Listen(path, &fakeBackend{}, nil); err == nil || err.Error() != want {
		t.Fatalf("second Listen: %v, want %q", err, want)
	}
	// Closing releases the state_dir for the next daemon.
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	listen(t, path, &fakeBackend{}).Close(context.Background())

	// A listener that does not take the lock is still detected by dialing.
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := Listen(path, &fakeBackend{}, nil); err == nil || err.Error() != want {
		t.Fatalf("Listen on a foreign live socket: %v, want %q", err, want)
	}
}

func TestDialNotRunning(t *testing.T) {
	path := filepath.Join(shortDir(t), "control.sock")
	_, err := Dial(path)
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Dial on a missing socket: %v, want ErrNotRunning naming %s", err, path)
	}
}

func TestDialPermissionDenied(t *testing.T) {
	if path := os.Getenv("PHONEBRIDGE_DIAL_AS_OTHER"); path != "" {
		// The half below runs this as another user: dial and say what came.
		_, err := Dial(path)
		fmt.Printf("dial: %v\n", err)
		return
	}
	want := "cannot use the control socket /x/control.sock: permission denied — run this as the user phonebridge runs as, or with sudo"
	c := &Client{path: "/x/control.sock"}
	opErr := &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.EACCES)}
	if err := c.connError(opErr); err.Error() != want {
		t.Fatalf("connError = %q, want %q", err, want)
	}

	// A real socket, made 0600 as the daemon makes it, dialled by a user
	// who is not its owner.
	_, _, path := start(t, &fakeBackend{})
	if err := os.Chmod(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	const deny = "permission denied — run this as"
	if os.Geteuid() != 0 {
		// Not the owner in effect once the owner may not use it either.
		if err := os.Chmod(path, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := Dial(path); err == nil || !strings.Contains(err.Error(), deny) {
			t.Fatalf("Dial on a socket we may not use: %v", err)
		}
		return
	}
	// Root ignores file permissions: this test binary again, as nobody.
	binDir, err := os.MkdirTemp("", "pbctl-bin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(binDir) })
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "control.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestDialPermissionDenied$")
	cmd.Dir = binDir
	cmd.Env = append(os.Environ(), "PHONEBRIDGE_DIAL_AS_OTHER="+path)
	const nobody = 65534
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the test binary as uid %d: %v\n%s", nobody, err, out)
	}
	if !strings.Contains(string(out), "dial: cannot use the control socket "+path+": "+deny) {
		t.Fatalf("as uid %d, Dial on the daemon's 0600 socket said:\n%s\nwant %q", nobody, out, deny)
	}
}

func TestRoundTrips(t *testing.T) {
	wa := &fakeLinker{status: bridge.LinkStatus{Name: "wa", State: bridge.LinkConnected, Since: t0, Account: account}}
	wa2 := &fakeLinker{
		status:    bridge.LinkStatus{Name: "wa2", State: bridge.LinkBanned, Since: t0, Cause: "101", Until: t0.Add(time.Hour)},
		unlinkErr: &bridge.LinkError{Reason: bridge.LinkBusy, Service: "WhatsApp", Cause: "a link is in progress"},
	}
	chats := fakeLister{{ID: "1@g.us", Name: "Family", Group: true}, {ID: "2@s.whatsapp.net", Name: "Bob"}}
	b := &fakeBackend{
		linkers: map[string]*fakeLinker{"wa": wa, "wa2": wa2},
		listers: map[string]bridge.ChatLister{"wa": chats},
	}
	_, c, _ := start(t, b)
	ctx := context.Background()

	links, err := c.Links(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []bridge.LinkStatus{wa.status, wa2.status}; !reflect.DeepEqual(links, want) {
		t.Fatalf("Links = %+v, want %+v", links, want)
	}

	got, err := c.Chats(ctx, "wa", "")
	if err != nil || !reflect.DeepEqual(got, []bridge.ChatInfo(chats)) {
		t.Fatalf("Chats = %+v, %v", got, err)
	}
	got, err = c.Chats(ctx, "wa", "Fam")
	if err != nil || !reflect.DeepEqual(got, []bridge.ChatInfo{chats[0]}) {
		t.Fatalf("Chats(Fam) = %+v, %v", got, err)
	}
	got, err = c.Chats(ctx, "wa", "nobody")
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Chats(nobody) = %#v, %v; want an empty list", got, err)
	}
	if _, err := c.Chats(ctx, "wa2", ""); err == nil || err.Error() != `link "wa2" cannot list its chats` {
		t.Fatalf("Chats on a link without chats: %v", err)
	}

	if err := c.Unlink(ctx, "wa", true); err != nil {
		t.Fatal(err)
	}
	if err := c.Unlink(ctx, "wa", false); err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, false}; !reflect.DeepEqual(wa.unlinks, want) {
		t.Fatalf("Unlink's local flags = %v, want %v", wa.unlinks, want)
	}
	var le *bridge.LinkError
	err = c.Unlink(ctx, "wa2", false)
	if !errors.As(err, &le) || *le != *wa2.unlinkErr.(*bridge.LinkError) {
		t.Fatalf("Unlink busy: %#v, want %v", err, wa2.unlinkErr)
	}
	status, body := raw(t, c, http.MethodPost, "/v1/links/wa2/unlink")
	if status != http.StatusConflict || body.Code != "busy" || body.Error != wa2.unlinkErr.Error() {
		t.Fatalf("busy unlink answered %d %+v", status, body)
	}
}

// TestBackfill: the client's request reaches the link with its chat and
// count; the link's refusal comes back as the error, a bad request as 400.
func TestBackfill(t *testing.T) {
	wa := &fakeLinker{}
	wa2 := &fakeLinker{backfillErr: errors.New(`WhatsApp link "wa2" is not connected; backfill once ` + "`phonebridge links`" + ` shows it connected`)}
	_, c, _ := start(t, &fakeBackend{linkers: map[string]*fakeLinker{"wa": wa, "wa2": wa2}})
	ctx := context.Background()
	if err := c.Backfill(ctx, "wa", "Family", 25); err != nil {
		t.Fatal(err)
	}
	if want := []string{"Family 25"}; !reflect.DeepEqual(wa.backfills, want) {
		t.Errorf("the link was asked %v, want %v", wa.backfills, want)
	}
	if err := c.Backfill(ctx, "wa2", "Bob", 5); err == nil || err.Error() != wa2.backfillErr.Error() {
		t.Errorf("a refused backfill: %v, want the link's reason", err)
	}
	if err := c.Backfill(ctx, "nope", "Bob", 5); err == nil || !strings.Contains(err.Error(), `no link called "nope"`) {
		t.Errorf("backfill of an unknown link: %v", err)
	}
	if status, body := raw(t, c, http.MethodPost, "/v1/links/wa/backfill?chat=Bob&count=many"); status != http.StatusBadRequest || !strings.Contains(body.Error, "needs a chat and a count") {
		t.Errorf("a bad count answered %d %+v", status, body)
	}
}

// raw sends a request the Client would not and returns the error answer.
func raw(t *testing.T, c *Client, method, path string) (int, errorBody) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://phonebridge"+path, nil)
	req.Header.Set(protocolHeader, strconv.Itoa(Protocol))
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var eb errorBody
	if err := json.Unmarshal(data, &eb); err != nil {
		t.Fatalf("%s %s answered %d %q: %v", method, path, resp.StatusCode, data, err)
	}
	return resp.StatusCode, eb
}

func TestErrors(t *testing.T) {
	wa := &fakeLinker{link: func(context.Context, bridge.LinkOptions, func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
		t.Error("Link called despite bad parameters")
		return bridge.LinkAccount{}, nil
	}}
	_, c, _ := start(t, &fakeBackend{linkers: map[string]*fakeLinker{"wa": wa}})
	ctx := context.Background()
	want := "no link called \"x\"; `phonebridge links` lists them"

	check := func(what string, err error, status int) {
		t.Helper()
		var e *Error
		if !errors.As(err, &e) || e.Status != status {
			t.Fatalf("%s: %#v, want an *Error with status %d", what, err, status)
		}
	}
	_, err := c.Chats(ctx, "x", "")
	check("Chats(x)", err, http.StatusNotFound)
	if err.Error() != want {
		t.Fatalf("Chats(x): %q, want %q", err, want)
	}
	err = c.Unlink(ctx, "x", false)
	check("Unlink(x)", err, http.StatusNotFound)
	_, err = c.Link(ctx, "x", bridge.LinkOptions{}, nil)
	check("Link(x)", err, http.StatusNotFound)
	if err.Error() != want {
		t.Fatalf("Link(x): %q, want %q", err, want)
	}

	_, err = c.Link(ctx, "wa", bridge.LinkOptions{Phone: "555-CALL-ME"}, nil)
	check("Link with a bad phone", err, http.StatusBadRequest)

	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{http.MethodPost, "/v1/links/wa/unlink?local=maybe", http.StatusBadRequest, codeBadRequest},
		{http.MethodGet, "/v1/links/wa/link", http.StatusBadRequest, codeBadRequest}, // not a websocket
		{http.MethodGet, "/v1/links/wa/unlink", http.StatusMethodNotAllowed, codeMethodNotAllowed},
		{http.MethodGet, "/v1/nope", http.StatusNotFound, codeNotFound},
		{http.MethodGet, "/v1/links/wa/nope", http.StatusNotFound, codeNotFound},
	} {
		status, body := raw(t, c, tc.method, tc.path)
		if status != tc.status || body.Code != tc.code || body.Error == "" || strings.Contains(body.Error, "\n") {
			t.Errorf("%s %s answered %d %+v, want %d %s", tc.method, tc.path, status, body, tc.status, tc.code)
		}
	}
}

func TestLinkQR(t *testing.T) {
	var want []bridge.LinkProgress
	for i := range 3 {
		want = append(want, bridge.LinkProgress{Kind: bridge.ProgressQR, QR: fmt.Sprintf("2@code%d", i), Expires: t0.Add(time.Duration(i+1) * 20 * time.Second)})
	}
	want = append(want, bridge.LinkProgress{Kind: bridge.ProgressWaiting, Reason: bridge.ReasonNetworkDown, Cause: "dial tcp: connection refused"})
	wa := &fakeLinker{link: func(ctx context.Context, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
		if opts.Phone != "" {
			t.Errorf("QR link got phone %q", opts.Phone)
		}
		for _, p := range want {
			progress(p)
		}
		return account, nil
	}}
	_, c, _ := start(t, &fakeBackend{linkers: map[string]*fakeLinker{"wa": wa}})
	var got []bridge.LinkProgress
	acct, err := c.Link(context.Background(), "wa", bridge.LinkOptions{}, func(p bridge.LinkProgress) { got = append(got, p) })
	if err != nil {
		t.Fatal(err)
	}
	if acct != account {
		t.Fatalf("account = %+v, want %+v", acct, account)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("progress = %+v\nwant %+v", got, want)
	}
}

func TestLinkPairingCode(t *testing.T) {
	code := bridge.LinkProgress{Kind: bridge.ProgressPairingCode, PairingCode: "ABCD-EFGH", Expires: t0}
	wa := &fakeLinker{link: func(ctx context.Context, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
		if opts.Phone != "+15551234567" {
			return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Cause: "phone " + opts.Phone}
		}
		progress(code)
		return account, nil
	}}
	_, c, _ := start(t, &fakeBackend{linkers: map[string]*fakeLinker{"wa": wa}})
	var got []bridge.LinkProgress
	acct, err := c.Link(context.Background(), "wa", bridge.LinkOptions{Phone: "+1 555 123-4567"}, func(p bridge.LinkProgress) { got = append(got, p) })
	if err != nil {
		t.Fatal(err)
	}
	if acct != account || !reflect.DeepEqual(got, []bridge.LinkProgress{code}) {
		t.Fatalf("Link = %+v with progress %+v", acct, got)
	}
}

func TestLinkFailures(t *testing.T) {
	// Every code comes back with what fills it in, through the link
	// stream and through an error answer (unlink).
	reasons := bridge.LinkFailures
	want := func(i int, r bridge.LinkFailure) *bridge.LinkError {
		le := &bridge.LinkError{Reason: r, Service: "WhatsApp", Cause: fmt.Sprintf("cause %d", i)}
		if r == bridge.LinkAlreadyLinked {
			le.Account = &account
		}
		return le
	}
	b := &fakeBackend{linkers: map[string]*fakeLinker{}}
	for i, r := range reasons {
		b.linkers[fmt.Sprint(i)] = &fakeLinker{link: func(ctx context.Context, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
			progress(bridge.LinkProgress{Kind: bridge.ProgressQR, QR: "2@x"})
			return bridge.LinkAccount{}, want(i, r)
		}, unlinkErr: want(i, r)}
	}
	b.linkers["plain"] = &fakeLinker{link: func(context.Context, bridge.LinkOptions, func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
		return bridge.LinkAccount{}, errors.New("store is read-only\nsecond line")
	}}
	_, c, _ := start(t, b)
	for i, r := range reasons {
		_, err := c.Link(context.Background(), fmt.Sprint(i), bridge.LinkOptions{}, nil)
		var le *bridge.LinkError
		if !errors.As(err, &le) || !reflect.DeepEqual(le, want(i, r)) {
			t.Errorf("reason %q came back from linking as %#v", r, err)
		}
		err = c.Unlink(context.Background(), fmt.Sprint(i), false)
		if !errors.As(err, &le) || !reflect.DeepEqual(le, want(i, r)) {
			t.Errorf("reason %q came back from unlinking as %#v", r, err)
		}
	}
	_, err := c.Link(context.Background(), "plain", bridge.LinkOptions{}, nil)
	var le *bridge.LinkError
	if !errors.As(err, &le) || le.Reason != bridge.LinkFailed || le.Cause != "store is read-only; second line" {
		t.Errorf("a plain error came back as %#v", err)
	}
}

// blockingLinker reports one progress and waits for its ctx to end,
// reporting the ctx's error on ended.
func blockingLinker() (*fakeLinker, chan error) {
	ended := make(chan error, 1)
	return &fakeLinker{link: func(ctx context.Context, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
		progress(bridge.LinkProgress{Kind: bridge.ProgressQR, QR: "2@wait"})
		<-ctx.Done()
		ended <- ctx.Err()
		return bridge.LinkAccount{}, ctx.Err()
	}}, ended
}

func TestLinkCancel(t *testing.T) {
	wa, ended := blockingLinker()
	_, c, _ := start(t, &fakeBackend{linkers: map[string]*fakeLinker{"wa": wa}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := c.Link(ctx, "wa", bridge.LinkOptions{}, func(bridge.LinkProgress) { cancel() })
	var le *bridge.LinkError
	if !errors.As(err, &le) || le.Reason != bridge.LinkCancelled {
		t.Fatalf("cancelled Link: %#v, want LinkCancelled", err)
	}
	if err := recv(t, ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("the Linker's ctx ended with %v", err)
	}
}

func TestLinkClientDisconnects(t *testing.T) {
	wa, ended := blockingLinker()
	_, c, _ := start(t, &fakeBackend{linkers: map[string]*fakeLinker{"wa": wa}})
	conn, _, err := c.ws.Dial("ws://phonebridge/v1/links/wa/link", http.Header{protocolHeader: {strconv.Itoa(Protocol)}})
	if err != nil {
		t.Fatal(err)
	}
	var f frame
	if err := conn.ReadJSON(&f); err != nil || f.Type != frameProgress {
		t.Fatalf("first frame %+v, %v", f, err)
	}
	conn.Close() // no cancel frame, no close frame
	if err := recv(t, ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("the Linker's ctx ended with %v", err)
	}
}

func TestCloseDuringLink(t *testing.T) {
	wa, ended := blockingLinker()
	s, c, path := start(t, &fakeBackend{linkers: map[string]*fakeLinker{"wa": wa}})
	closed := make(chan error, 1)
	_, err := c.Link(context.Background(), "wa", bridge.LinkOptions{}, func(bridge.LinkProgress) {
		go func() { closed <- s.Close(context.Background()) }()
	})
	var le *bridge.LinkError
	if !errors.As(err, &le) || le.Reason != bridge.LinkShuttingDown {
		t.Fatalf("Link during Close: %#v", err)
	}
	if err := recv(t, ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("the Linker's ctx ended with %v", err)
	}
	if err := recv(t, closed); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the socket is still there after Close: %v", err)
	}
	if _, err := Dial(path); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Dial after Close: %v", err)
	}
}

func TestStatusAndReload(t *testing.T) {
	b := &fakeBackend{linkers: map[string]*fakeLinker{"wa": {status: bridge.LinkStatus{Name: "wa", State: bridge.LinkConnected}}}}
	_, c, _ := start(t, b)
	st, err := c.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "1.2.3-test" || len(st.Links) != 1 || len(st.Outbox) != 1 || st.Outbox[0].LastError != "connection refused" {
		t.Errorf("status = %+v", st)
	}

	b.reload = ReloadReport{Config: "/etc/phonebridge/config.yaml", Restarted: []string{"irc"}}
	if rep, err := c.Reload(t.Context()); err != nil || fmt.Sprint(rep.Restarted) != "[irc]" {
		t.Errorf("reload = %+v, %v", rep, err)
	}
	b.reload, b.reloadErr = ReloadReport{}, &config.Problems{File: "/etc/phonebridge/config.yaml", Items: []config.Problem{
		{Path: "routes[0].endpoints[1].connector", Message: "unknown connector \"ircc\""},
		{Path: "connectors.irc.server", Message: "is required"},
	}}
	_, err = c.Reload(t.Context())
	var ce *Error
	if !errors.As(err, &ce) || ce.Status != 422 || ce.Code != "bad_config" || len(ce.Problems) != 2 || !strings.Contains(ce.Problems[0], "routes[0].endpoints[1].connector") {
		t.Errorf("a refused reload: %#v", err)
	}
	// Reload changes things: GET is refused.
	if status, _ := raw(t, c, http.MethodGet, "/v1/reload"); status != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/reload: %d, want 405", status)
	}
}

// TestProtocolMismatchSaysWhichSideToUpdate: a command older than the
// daemon (no protocol header: release 1) is refused with a reason its own
// error printing shows, and a command newer than the daemon refuses the
// daemon at Dial, each naming what to do.
func TestProtocolMismatchSaysWhichSideToUpdate(t *testing.T) {
	wa := &fakeLinker{status: bridge.LinkStatus{Name: "wa", State: bridge.LinkConnected}}
	_, c, path := start(t, &fakeBackend{linkers: map[string]*fakeLinker{"wa": wa}})

	get := func(header string) (int, errorBody) {
		req, _ := http.NewRequest(http.MethodGet, "http://phonebridge/v1/links", nil)
		if header != "" {
			req.Header.Set(protocolHeader, header)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var eb errorBody
		json.NewDecoder(resp.Body).Decode(&eb)
		return resp.StatusCode, eb
	}
	for header, advice := range map[string]string{
		"":                         "run the command of the daemon's release",
		"1":                        "run the command of the daemon's release",
		strconv.Itoa(Protocol + 1): "restart it to run the installed phonebridge",
	} {
		status, eb := get(header)
		if status != http.StatusBadRequest || eb.Code != codeProtocolMismatch || !strings.Contains(eb.Error, advice) || !strings.Contains(eb.Error, "1.2.3-test") {
			t.Errorf("a request of protocol %q answered %d %+v, want 400 protocol_mismatch saying %q", header, status, eb, advice)
		}
	}
	if status, eb := get(strconv.Itoa(Protocol)); status != http.StatusOK {
		t.Errorf("a request of this protocol answered %d %+v", status, eb)
	}
	// The link stream checks it too: an old CLI's websocket is refused
	// before linking starts.
	if _, resp, err := c.ws.Dial("ws://phonebridge/v1/links/wa/link", nil); err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a link stream without the protocol header: %v, %v; want refused with 400", resp, err)
	}
	// /v1/version answers every version, so a client can tell.
	if _, err := Dial(path); err != nil {
		t.Errorf("Dial: %v", err)
	}

	// A daemon of an older release (no "protocol" in its version) or a
	// newer one: Dial refuses it and says which side to update.
	for answer, advice := range map[string]string{
		`{"version": "0.9.0"}`: "restart the daemon so it runs the installed phonebridge",
		fmt.Sprintf(`{"version": "9.0.0", "protocol": %d}`, Protocol+1): "run the phonebridge command of the daemon's release",
	} {
		old := filepath.Join(shortDir(t), "old.sock")
		ln, err := net.Listen("unix", old)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/version" {
				t.Errorf("Dial asked an incompatible daemon for %s", r.URL.Path)
			}
			io.WriteString(w, answer)
		})}
		go srv.Serve(ln)
		_, err = Dial(old)
		srv.Close()
		if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), advice) {
			t.Errorf("Dial on a daemon answering %s: %v, want ErrProtocol saying %q", answer, err, advice)
		}
	}
}
