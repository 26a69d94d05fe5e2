package webui

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"rsc.io/qr"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
)

// fakeAdmin is the core's LinkAdmin over scripted links.
type fakeAdmin struct {
	names []string
	links map[string]*fakeLink
}

func newFakeAdmin(links ...*fakeLink) *fakeAdmin {
	a := &fakeAdmin{links: map[string]*fakeLink{}}
	for _, l := range links {
		a.names = append(a.names, l.name)
		a.links[l.name] = l
	}
	return a
}

func (a *fakeAdmin) Links() []bridge.LinkStatus {
	var out []bridge.LinkStatus
	for _, n := range a.names {
		out = append(out, a.links[n].LinkStatus())
	}
	return out
}

func (a *fakeAdmin) Linker(name string) (bridge.Linker, bool) {
	l, ok := a.links[name]
	return l, ok
}

func (a *fakeAdmin) ChatLister(string) (bridge.ChatLister, bool) { return nil, false }

// fakeLink is a Linker whose Link calls the test drives one by one.
type fakeLink struct {
	name  string
	mu    sync.Mutex
	state bridge.LinkStatus
	calls chan *linkCall
}

func newFakeLink(st bridge.LinkStatus) *fakeLink {
	return &fakeLink{name: st.Name, state: st, calls: make(chan *linkCall, 4)}
}

func (l *fakeLink) LinkStatus() bridge.LinkStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

func (l *fakeLink) Unlink(context.Context, bool) error { return nil }

// linkCall is one running Link: the test sends progress through it, then
// ends it with finish, or watches it get cancelled.
type linkCall struct {
	ctx      context.Context
	opts     bridge.LinkOptions
	progress func(bridge.LinkProgress)
	finish   chan error // nil: linked to linkedAccount
}

var linkedAccount = bridge.LinkAccount{ID: "15551234567@s.whatsapp.net", Handle: "+15551234567", Name: "Ann", Device: "android"}

func (l *fakeLink) Link(ctx context.Context, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
	c := &linkCall{ctx: ctx, opts: opts, progress: progress, finish: make(chan error, 1)}
	select {
	case l.calls <- c:
	case <-ctx.Done():
		return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkCancelled}
	}
	select {
	case err := <-c.finish:
		if err != nil {
			return bridge.LinkAccount{}, err
		}
		l.mu.Lock()
		l.state = bridge.LinkStatus{Name: l.name, State: bridge.LinkConnected, Since: time.Now(), Account: linkedAccount}
		l.mu.Unlock()
		return linkedAccount, nil
	case <-ctx.Done():
		return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkCancelled}
	}
}

// nextCall waits for the page (or a test's websocket) to start linking.
func (l *fakeLink) nextCall(t testing.TB) *linkCall {
	t.Helper()
	select {
	case c := <-l.calls:
		return c
	case <-time.After(10 * time.Second):
		t.Fatalf("link %s was not started", l.name)
		return nil
	}
}

func (c *linkCall) qr(code string) {
	c.progress(bridge.LinkProgress{Kind: bridge.ProgressQR, QR: code, Expires: time.Now().Add(time.Minute)})
}

// waitCancelled fails the test unless linking is cancelled soon.
func (c *linkCall) waitCancelled(t testing.TB) {
	t.Helper()
	select {
	case <-c.ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("linking was not cancelled")
	}
}

// Codes shaped like WhatsApp's: ref, then base64 keys.
const (
	code1 = "2@r3fXzQ8yJkLm0pQrStUvWxYz,aGVsbG8gd29ybGQgdGhpcyBpcyBrZXkx,bm9pc2Uga2V5IG51bWJlciBvbmUgaGVyZQ==,aWRlbnRpdHkga2V5IG9uZQ=="
	code2 = "2@S3cOnDrEfAbCdEfGhIjKlMnOpQ,c2Vjb25kIHJlZiBmb3IgdGhlIHJvdGF0aW9u,bm9pc2Uga2V5IG51bWJlciBvbmUgaGVyZQ==,aWRlbnRpdHkga2V5IG9uZQ=="
)

// wantModules is code's modules with the 4-module quiet zone, row by
// row, "1" dark, and the side in modules without the zone.
func wantModules(t testing.TB, code string) (string, int) {
	t.Helper()
	q, err := qr.Encode(code, qr.L)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for y := -4; y < q.Size+4; y++ {
		for x := -4; x < q.Size+4; x++ {
			b.WriteByte("01"[boolInt(q.Black(x, y))])
		}
	}
	return b.String(), q.Size
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// pngModules samples a QR image at each module's centre, as wantModules
// lists them, for a code side n.
func pngModules(t testing.TB, data []byte, n int) string {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("the QR image is not a PNG: %v", err)
	}
	w := img.Bounds().Dx()
	if w != img.Bounds().Dy() || w%(n+8) != 0 {
		t.Fatalf("the QR image is %v, not square with a whole number of pixels for each of its %d modules", img.Bounds(), n+8)
	}
	return sampleModules(img, n, w/(n+8))
}

func sampleModules(img image.Image, n, scale int) string {
	var b strings.Builder
	for y := range n + 8 {
		for x := range n + 8 {
			r, _, _, _ := img.At(x*scale+scale/2, y*scale+scale/2).RGBA()
			b.WriteByte("01"[boolInt(r < 0x8000)])
		}
	}
	return b.String()
}

// logBuffer is a log the server writes while the test reads.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

const testToken = "test-token-0123456789abcdef"

// served is a running Server with its log and base URL.
type served struct {
	*Server
	url string
	log *logBuffer
}

// serve starts the page on a free loopback port with testToken (unless
// cfg says otherwise) and closes it at the end of the test, checking that
// the token never reached the log.
func serve(t *testing.T, admin bridge.LinkAdmin, cfg config.Web, stateDir string) *served {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	lb := &logBuffer{}
	s, err := Start(cfg, stateDir, admin, slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		if cfg.Token != "" && strings.Contains(lb.String(), cfg.Token) {
			t.Errorf("the log holds the token:\n%s", lb)
		}
	})
	return &served{Server: s, url: fmt.Sprintf("http://%s", s.Addr()), log: lb}
}

// testLinks are an unlinked, a logged-out and a connected link.
func testLinks() (phone, work, home *fakeLink) {
	since := time.Date(2025, 3, 1, 9, 30, 0, 0, time.UTC)
	phone = newFakeLink(bridge.LinkStatus{Name: "phone", State: bridge.LinkUnlinked, Since: since})
	work = newFakeLink(bridge.LinkStatus{Name: "work", State: bridge.LinkLoggedOut, Service: "WhatsApp", Since: since, Cause: "device removed"})
	home = newFakeLink(bridge.LinkStatus{Name: "home", State: bridge.LinkConnected, Since: since,
		Account: bridge.LinkAccount{ID: "15550001111@s.whatsapp.net", Handle: "+15550001111", Name: "Bob"}})
	return phone, work, home
}
