package mediaserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
)

const publicURL = "https://bridge.example.org/media"

// clock is a settable now for tests that must not wait out an expiry.
type clock struct{ unixNano atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.unixNano.Store(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *clock) now() time.Time          { return time.Unix(0, c.unixNano.Load()).UTC() }
func (c *clock) advance(d time.Duration) { c.unixNano.Add(int64(d)) }

func testConfig() config.Media {
	return config.Media{Listen: "127.0.0.1:0", PublicURL: publicURL, MaxBytes: 1 << 20, Expiry: time.Hour}
}

// startServer starts a server on stateDir that is closed when the test
// ends; now nil is the real clock.
func startServer(t *testing.T, cfg config.Media, stateDir string, now func() time.Time) *Server {
	t.Helper()
	if now == nil {
		now = time.Now
	}
	s, err := start(cfg, stateDir, slog.New(slog.DiscardHandler), now)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func media(data []byte, mimeType, name string) bridge.Media {
	return bridge.Media{MIME: mimeType, Name: name, Open: func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}}
}

func publish(t *testing.T, s *Server, m bridge.Media) string {
	t.Helper()
	link, err := s.Publish(context.Background(), m)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if !strings.HasPrefix(link, publicURL+"/") {
		t.Fatalf("link %q is not under %s", link, publicURL)
	}
	return link
}

// get requests path (a link or a raw path) from s, sending the raw path
// as it is, and returns the response with its body read.
func get(t *testing.T, s *Server, method, path string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	path = strings.TrimPrefix(path, publicURL)
	req, err := http.NewRequest(method, "http://"+s.Addr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// files lists the media directory.
func files(t *testing.T, stateDir string) []string {
	t.Helper()
	ents, err := os.ReadDir(mediaDir(stateDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func idOf(t *testing.T, link string) string {
	t.Helper()
	id, _, ok := strings.Cut(strings.TrimPrefix(link, publicURL+"/"), "/")
	if !ok {
		t.Fatalf("link %q has no id and name", link)
	}
	return id
}

func checkSafetyHeaders(t *testing.T, resp *http.Response) {
	t.Helper()
	if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
	}
	if got := resp.Header.Get("Content-Security-Policy"); got != "sandbox; default-src 'none'" {
		t.Errorf("Content-Security-Policy = %q", got)
	}
}

func TestPublishedFileIsServedWithItsHeaders(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, testConfig(), dir, nil)
	data := []byte("\x89PNG\r\n\x1a\n not really a picture")
	link := publish(t, s, media(data, "image/png", "cat photo.png"))
	if !strings.HasSuffix(link, "/cat%20photo.png") {
		t.Errorf("link %q does not end with the escaped name", link)
	}

	resp, body := get(t, s, http.MethodGet, link, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("GET: %d %q, want 200 %q", resp.StatusCode, body, data)
	}
	want := map[string]string{
		"Content-Type":        "image/png",
		"Content-Length":      strconv.Itoa(len(data)),
		"Content-Disposition": `inline; filename="cat photo.png"`,
		"Accept-Ranges":       "bytes",
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	checkSafetyHeaders(t, resp)
	cc := resp.Header.Get("Cache-Control")
	age, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(cc, "private, max-age="), ", immutable"))
	if err != nil || age <= 0 || age > 3600 {
		t.Errorf("Cache-Control = %q, want private with a max-age up to the expiry (3600 s)", cc)
	}
	if exp, err := http.ParseTime(resp.Header.Get("Expires")); err != nil || exp.Before(time.Now().Add(59*time.Minute)) || exp.After(time.Now().Add(61*time.Minute)) {
		t.Errorf("Expires = %q, want in an hour", resp.Header.Get("Expires"))
	}

	resp, body = get(t, s, http.MethodHead, link, nil)
	if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.Header.Get("Content-Length") != strconv.Itoa(len(data)) {
		t.Errorf("HEAD: %d, body %q, Content-Length %q", resp.StatusCode, body, resp.Header.Get("Content-Length"))
	}

	resp, body = get(t, s, http.MethodGet, link, http.Header{"Range": {"bytes=2-5"}})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[2:6]) {
		t.Errorf("Range 2-5: %d %q, want 206 %q", resp.StatusCode, body, data[2:6])
	}
	if got, want := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes 2-5/%d", len(data)); got != want {
		t.Errorf("Content-Range = %q, want %q", got, want)
	}

	resp, _ = get(t, s, http.MethodGet, link, http.Header{"If-None-Match": {resp.Header.Get("ETag")}})
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("GET with the ETag: %d, want 304", resp.StatusCode)
	}

	fi, err := os.Stat(mediaDir(dir))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("media dir: %v, %v; want mode 0700", fi.Mode(), err)
	}
	names := files(t, dir)
	if len(names) != 2 {
		t.Fatalf("media dir holds %q, want the file and its metadata", names)
	}
	for _, n := range names {
		fi, err := os.Stat(filepath.Join(mediaDir(dir), n))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", n, fi.Mode(), err)
		}
	}
}

func TestOverMaxBytesIsRefusedForGoodAndLeavesNoFile(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.MaxBytes = 10
	s := startServer(t, cfg, dir, nil)

	_, err := s.Publish(context.Background(), media(bytes.Repeat([]byte("x"), 11), "text/plain", "big.txt"))
	if !bridge.IsPermanent(err) || !strings.Contains(err.Error(), "media.max_bytes") {
		t.Errorf("11 bytes with a limit of 10: err = %v, want a permanent error naming media.max_bytes", err)
	}
	// A declared size over the limit is refused without opening.
	declared := bridge.Media{Name: "big.bin", Size: 11, Open: func(context.Context) (io.ReadCloser, error) {
		t.Error("Open called for media declared over the limit")
		return nil, errors.New("not wanted")
	}}
	if _, err := s.Publish(context.Background(), declared); !bridge.IsPermanent(err) {
		t.Errorf("declared 11 bytes: err = %v, want permanent", err)
	}
	if names := files(t, dir); len(names) != 0 {
		t.Errorf("refused publishes left %q", names)
	}
	link := publish(t, s, media(bytes.Repeat([]byte("x"), 10), "text/plain", "fits.txt"))
	if resp, body := get(t, s, http.MethodGet, link, nil); resp.StatusCode != http.StatusOK || len(body) != 10 {
		t.Errorf("exactly max_bytes: %d, %d bytes", resp.StatusCode, len(body))
	}
}

func TestFailedOpenOrCopyLeavesNoFile(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, testConfig(), dir, nil)
	openErr := errors.New("origin unreachable")
	m := bridge.Media{Name: "a.jpg", Open: func(context.Context) (io.ReadCloser, error) { return nil, openErr }}
	if _, err := s.Publish(context.Background(), m); !errors.Is(err, openErr) || bridge.IsPermanent(err) {
		t.Errorf("failed open: err = %v, want the transient open error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Publish(ctx, media([]byte("data"), "image/jpeg", "a.jpg")); !errors.Is(err, context.Canceled) {
		t.Errorf("ended context: err = %v, want context.Canceled", err)
	}
	if _, err := s.Publish(context.Background(), bridge.Media{Name: "x"}); !bridge.IsPermanent(err) {
		t.Errorf("no Open: err = %v, want permanent", err)
	}
	if names := files(t, dir); len(names) != 0 {
		t.Errorf("failed publishes left %q", names)
	}
}

func TestExpiredLinkIsNotFoundAndItsFileDeleted(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	s := startServer(t, testConfig(), dir, clk.now)
	link := publish(t, s, media([]byte("soon gone"), "text/plain", "note.txt"))
	clk.advance(59 * time.Minute)
	if resp, _ := get(t, s, http.MethodGet, link, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("before expiry: %d", resp.StatusCode)
	}
	clk.advance(time.Minute)
	// Not served once expired, even before the files are deleted.
	resp, body := get(t, s, http.MethodGet, link, nil)
	if resp.StatusCode != http.StatusNotFound || strings.Count(string(body), "\n") != 1 || !strings.HasSuffix(string(body), "\n") {
		t.Errorf("at expiry: %d %q, want 404 with a one-line body", resp.StatusCode, body)
	}
	checkSafetyHeaders(t, resp)
	s.expire()
	if names := files(t, dir); len(names) != 0 {
		t.Errorf("after expiry the media dir holds %q", names)
	}
}

func TestTheTimerDeletesAnExpiredFile(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.Expiry = 200 * time.Millisecond
	s := startServer(t, cfg, dir, nil)
	link := publish(t, s, media([]byte("brief"), "text/plain", "brief.txt"))
	deadline := time.Now().Add(3 * time.Second)
	for len(files(t, dir)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("3 s after publishing with a 200 ms expiry the media dir still holds %q", files(t, dir))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp, _ := get(t, s, http.MethodGet, link, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("expired link: %d, want 404", resp.StatusCode)
	}
	s.mu.Lock()
	armed := !s.armed.IsZero()
	s.mu.Unlock()
	if armed {
		t.Error("a timer is still armed with no file left")
	}
}

// The timer runs on the monotonic clock, expiry on the wall clock: when
// the wall clock was set back, the timer fires before anything is due and
// must arm again rather than leave the file for ever.
func TestATimerFiringEarlyArmsAgain(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	cfg := testConfig()
	cfg.Expiry = 50 * time.Millisecond
	s := startServer(t, cfg, dir, clk.now)
	publish(t, s, media([]byte("x"), "text/plain", "x.txt"))
	// The timer fires; by clk nothing is due.
	deadline := time.Now().Add(3 * time.Second)
	for s.fired.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the expiry timer did not fire within 3s of a 50ms expiry")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := len(files(t, dir)); got != 2 {
		t.Fatalf("media dir holds %d files after a timer that fired early, want 2", got)
	}
	early := s.fired.Load()
	clk.advance(time.Second)
	for len(files(t, dir)) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the file was not deleted once due: the timer was not armed again")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if late := s.fired.Load(); late <= early {
		t.Errorf("the timer ran %d times, as many as before the file was due: something else deleted it", late)
	}
}

func TestRestartKeepsWhatIsValidAndDeletesTheRest(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	cfg := testConfig()
	s, err := start(cfg, dir, slog.New(slog.DiscardHandler), clk.now)
	if err != nil {
		t.Fatal(err)
	}
	old := publish(t, s, media([]byte("old"), "text/plain", "old.txt"))
	clk.advance(40 * time.Minute)
	kept := publish(t, s, media([]byte("kept"), "text/plain", "kept.txt"))
	torn := publish(t, s, media([]byte("torn"), "text/plain", "torn.txt"))
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	md := mediaDir(dir)
	// What a crash leaves: a temp file, bytes with no metadata, a file cut
	// short; and a file that is not the server's own.
	orphan := newID()
	for name, content := range map[string]string{".tmp-123": "half", orphan: "no metadata", "README": "mine", idOf(t, torn): "to"} {
		if err := os.WriteFile(filepath.Join(md, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	clk.advance(30 * time.Minute) // old expired while down; kept has 10 min left
	s = startServer(t, cfg, dir, clk.now)
	want := []string{"README", idOf(t, kept), idOf(t, kept) + metaSuffix}
	slices.Sort(want)
	if got := files(t, dir); !slices.Equal(got, want) {
		t.Errorf("after restart the media dir holds %q, want %q", got, want)
	}
	if resp, body := get(t, s, http.MethodGet, kept, nil); resp.StatusCode != http.StatusOK || string(body) != "kept" {
		t.Errorf("unexpired link after restart: %d %q", resp.StatusCode, body)
	}
	for _, link := range []string{old, torn} {
		if resp, _ := get(t, s, http.MethodGet, link, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s after restart: %d, want 404", link, resp.StatusCode)
		}
	}
	s.mu.Lock()
	armed, wantArmed := s.armed, s.files[idOf(t, kept)].Expires
	s.mu.Unlock()
	if !armed.Equal(wantArmed) {
		t.Errorf("timer armed for %v, want the kept file's expiry %v", armed, wantArmed)
	}
}

func TestAShorterExpiryCutsOldLinksShort(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	s, err := start(testConfig(), dir, slog.New(slog.DiscardHandler), clk.now)
	if err != nil {
		t.Fatal(err)
	}
	link := publish(t, s, media([]byte("x"), "text/plain", "x.txt"))
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk.advance(20 * time.Minute)
	cfg := testConfig()
	cfg.Expiry = 10 * time.Minute
	s = startServer(t, cfg, dir, clk.now)
	if resp, _ := get(t, s, http.MethodGet, link, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("link older than the new expiry: %d, want 404", resp.StatusCode)
	}
	if names := files(t, dir); len(names) != 0 {
		t.Errorf("media dir holds %q", names)
	}
}

func TestGuessesAreNotFound(t *testing.T) {
	s := startServer(t, testConfig(), t.TempDir(), nil)
	link := publish(t, s, media([]byte("secret"), "text/plain", "secret.txt"))
	id := idOf(t, link)
	paths := []string{
		"/",
		"/" + id,
		"/" + id + "/",
		"/" + id + "/other.txt",
		"/" + id + "/SECRET.txt",
		"/" + id + "/secret.txt/",
		"/" + id + "/secret.txt/x",
		"/" + id + "/secret.txt%2Fx",
		"/" + strings.ToUpper(id) + "/secret.txt",
		"/" + id[1:] + "/secret.txt",
		"/" + id + "A/secret.txt",
		"//" + id + "/secret.txt",
		"/../" + id + "/secret.txt",
		"/" + id + "/../" + id + "/secret.txt",
		"/%2e%2e/%2e%2e/etc/passwd",
		"/../../../../etc/passwd",
		"/" + strings.Repeat(".", len(id)) + "/secret.txt",
		"/" + id + "%2Fsecret.txt",
		"/" + id[:len(id)-1] + "!/secret.txt",
	}
	for range 20 {
		paths = append(paths, "/"+newID()+"/secret.txt")
	}
	for _, p := range paths {
		resp, body := get(t, s, http.MethodGet, p, nil)
		if resp.StatusCode != http.StatusNotFound || strings.Contains(string(body), "secret") {
			t.Errorf("GET %s: %d %q, want 404", p, resp.StatusCode, body)
		}
	}
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions} {
		resp, _ := get(t, s, method, link, nil)
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: %d, Allow %q; want 405 allowing GET, HEAD", method, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
	if resp, body := get(t, s, http.MethodGet, link, nil); resp.StatusCode != http.StatusOK || string(body) != "secret" {
		t.Errorf("the real link after the guesses: %d %q", resp.StatusCode, body)
	}
}

func TestIDsAreLongRandomAndNewPerPublish(t *testing.T) {
	s := startServer(t, testConfig(), t.TempDir(), nil)
	seen := map[string]bool{}
	var ids []string
	for range 10 {
		id := idOf(t, publish(t, s, media([]byte("same bytes"), "text/plain", "same.txt")))
		raw, err := base64.RawURLEncoding.DecodeString(id)
		if err != nil || len(raw)*8 < 128 {
			t.Errorf("id %q: %d bits (%v), want base64url of at least 128", id, len(raw)*8, err)
		}
		if seen[id] {
			t.Errorf("id %q handed out twice for the same bytes", id)
		}
		seen[id] = true
		ids = append(ids, id)
	}
	// Every character is random: none is the same in all ten ids (by
	// chance one in 64^9).
	for i := range ids[0] {
		same := true
		for _, id := range ids[1:] {
			same = same && len(id) > i && id[i] == ids[0][i]
		}
		if same {
			t.Errorf("character %d of every id is %q", i, ids[0][i])
		}
	}
}

func TestActiveContentIsDownloadedNotShown(t *testing.T) {
	s := startServer(t, testConfig(), t.TempDir(), nil)
	cases := []struct {
		mime, name      string
		wantType, wantD string
	}{
		{"image/svg+xml", "x.svg", "image/svg+xml", `attachment; filename=x.svg`},
		{"text/html; charset=utf-8", "page.html", "text/html; charset=utf-8", `attachment; filename=page.html`},
		{"application/xhtml+xml", "p.xhtml", "application/xhtml+xml", `attachment; filename=p.xhtml`},
		{"", "", "application/octet-stream", `attachment; filename=file`},
		{"not a type", "a.bin", "application/octet-stream", `attachment; filename=a.bin`},
		{"audio/ogg; codecs=opus", "", "audio/ogg; codecs=opus", `inline; filename=file.ogg`},
		{"video/mp4", "clip.mp4", "video/mp4", `inline; filename=clip.mp4`},
		{"image/jpeg", "été.jpg", "image/jpeg", `inline; filename*=utf-8''%C3%A9t%C3%A9.jpg`},
	}
	for _, c := range cases {
		link := publish(t, s, media([]byte("<script>alert(1)</script>"), c.mime, c.name))
		resp, _ := get(t, s, http.MethodGet, link, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d", c.mime, resp.StatusCode)
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != c.wantType {
			t.Errorf("%q: Content-Type %q, want %q", c.mime, got, c.wantType)
		}
		if got := resp.Header.Get("Content-Disposition"); got != c.wantD {
			t.Errorf("%q: Content-Disposition %q, want %q", c.mime, got, c.wantD)
		}
		checkSafetyHeaders(t, resp)
	}
}

func TestCleanName(t *testing.T) {
	long := strings.Repeat("é", 100) + ".jpeg"
	for in, want := range map[string]string{
		"../../etc/passwd":       "passwd",
		`C:\Users\a\report.pdf`:  "report.pdf",
		"photo\u202egpj.exe":     "photogpj.exe",
		"a\x00b\nc.txt":          "abc.txt",
		`a"b<c>:d|e?f*.txt`:      "a_b_c__d_e_f_.txt",
		"  .hidden. ":            "hidden",
		"...":                    "file.png",
		"bad\xffutf8.txt":        "badutf8.txt",
		long:                     strings.Repeat("é", (maxNameBytes-5)/2) + ".jpeg",
		strings.Repeat("a", 300): strings.Repeat("a", maxNameBytes),
	} {
		got := cleanName(in, "image/png")
		if got != want {
			t.Errorf("cleanName(%q) = %q, want %q", in, got, want)
		}
		if len(got) > maxNameBytes {
			t.Errorf("cleanName(%q) is %d bytes", in, len(got))
		}
	}
}

func TestConcurrentPublishes(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, testConfig(), dir, nil)
	const n = 24
	links := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			data := []byte(fmt.Sprintf("file %d", i))
			link, err := s.Publish(context.Background(), media(data, "text/plain", fmt.Sprintf("f%d.txt", i)))
			if err != nil {
				t.Errorf("Publish %d: %v", i, err)
				return
			}
			links[i] = link
			// Serving runs alongside the other publishes.
			if resp, body := get(t, s, http.MethodGet, link, nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
				t.Errorf("GET %d: %d %q", i, resp.StatusCode, body)
			}
		})
	}
	wg.Wait()
	if got := len(files(t, dir)); got != 2*n {
		t.Errorf("media dir holds %d files, want %d", got, 2*n)
	}
	if slices.Sort(links); len(slices.Compact(links)) != n {
		t.Error("two publishes got the same link")
	}
}

func TestCloseLeavesNothingRunning(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.Expiry = 200 * time.Millisecond
	s, err := start(cfg, dir, slog.New(slog.DiscardHandler), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	link := publish(t, s, media([]byte("x"), "text/plain", "x.txt"))
	if resp, _ := get(t, s, http.MethodGet, link, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
	addr := s.Addr().String()
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Error("still accepting connections after Close")
	}
	if _, err := s.Publish(context.Background(), media([]byte("y"), "text/plain", "y.txt")); err == nil || bridge.IsPermanent(err) {
		t.Errorf("Publish after Close: err = %v, want a transient error", err)
	}
	// The expiry timer is disarmed: past the expiry the file is still
	// there for the next Start to handle.
	time.Sleep(500 * time.Millisecond)
	if got := len(files(t, dir)); got != 2 {
		t.Errorf("after Close the media dir holds %d files, want the 2 published before", got)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		var left []string
		for g := range strings.SplitSeq(stacks, "\n\n") {
			if strings.Contains(g, "mediaserver.(*Server)") || strings.Contains(g, "net/http.(*Server).Serve") || strings.Contains(g, "net/http.(*conn).serve") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines still running after Close:\n%s", strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestListenAddressInUse(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	dir := t.TempDir()
	cfg := testConfig()
	cfg.Listen = held.Addr().String()
	_, err = Start(cfg, dir, slog.New(slog.DiscardHandler))
	if err == nil || !strings.HasPrefix(err.Error(), "media.listen: ") || strings.Contains(err.Error(), "\n") {
		t.Errorf("Start on a taken address: err = %v, want one line naming media.listen", err)
	}
	cfg = testConfig()
	cfg.PublicURL = ""
	if _, err := Start(cfg, dir, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "media.public_url") {
		t.Errorf("Start with no public_url: err = %v", err)
	}
}
