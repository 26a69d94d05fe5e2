package webui

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
)

func serveTest(t *testing.T, admin bridge.LinkAdmin) *served {
	return serve(t, admin, config.Web{Token: testToken}, t.TempDir())
}

// noRedirects is a client that shows redirects instead of following them.
var noRedirects = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       10 * time.Second,
}

func do(t *testing.T, method, u string, body io.Reader, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// signIn returns the session cookie the page sets for the right token.
func signIn(t *testing.T, s *served) *http.Cookie {
	t.Helper()
	resp, _ := do(t, "GET", s.url+"/?token="+url.QueryEscape(testToken), nil, nil)
	for _, c := range resp.Cookies() {
		if c.Name == cookieName {
			return c
		}
	}
	t.Fatalf("no %s cookie after signing in: %d %v", cookieName, resp.StatusCode, resp.Header)
	return nil
}

func withCookie(c *http.Cookie) http.Header {
	return http.Header{"Cookie": {c.Name + "=" + c.Value}}
}

func TestEverythingButTheLoginFormNeedsTheCookie(t *testing.T) {
	s := serveTest(t, newFakeAdmin(testLinks()))
	for _, path := range []string{"/app.js", "/api/links", "/api/link?link=phone"} {
		for _, cookie := range []string{"", cookieName + "=" + testToken, cookieName + "=0000"} {
			resp, body := do(t, "GET", s.url+path, nil, http.Header{"Cookie": {cookie}, "Origin": {s.url}})
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"error":"sign in first`) {
				t.Errorf("GET %s with cookie %q: %d %s, want 401 with a JSON reason", path, cookie, resp.StatusCode, body)
			}
		}
	}
	resp, body := do(t, "GET", s.url+"/", nil, nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `name="token"`) || strings.Contains(body, "app.js") {
		t.Errorf("GET / without the cookie: %d, want 401 with the login form and not the page:\n%s", resp.StatusCode, body)
	}
	if resp, _ := do(t, "GET", s.url+"/style.css", nil, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("the login form's stylesheet: %d", resp.StatusCode)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy %q lets the page load or be framed by others", csp)
	}
}

func TestTokenInURLSetsAStrictHttpOnlyCookie(t *testing.T) {
	phone, work, home := testLinks()
	s := serveTest(t, newFakeAdmin(phone, work, home))

	resp, body := do(t, "GET", s.url+"/?token=wrong-token-0123456789", nil, nil)
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 || !strings.Contains(body, "That token is wrong.") {
		t.Fatalf("a wrong token: %d, cookies %v, want 401 saying so with no cookie:\n%s", resp.StatusCode, resp.Cookies(), body)
	}

	resp, _ = do(t, "GET", s.url+"/?token="+url.QueryEscape(testToken), nil, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("the right token: %d to %q, want 303 to / so the token leaves the address bar", resp.StatusCode, resp.Header.Get("Location"))
	}
	c := resp.Cookies()[0]
	if c.Name != cookieName || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Secure {
		t.Errorf("cookie %+v: want %s, HttpOnly, SameSite=Strict, Path=/, not Secure on plain http", c, cookieName)
	}
	if strings.Contains(c.Value, testToken) {
		t.Error("the cookie holds the token itself")
	}

	resp, body = do(t, "GET", s.url+"/", nil, withCookie(c))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `src="/app.js"`) {
		t.Errorf("the page with the cookie: %d\n%s", resp.StatusCode, body)
	}
	resp, body = do(t, "GET", s.url+"/api/links", nil, withCookie(c))
	var got struct {
		Links []struct {
			Name    string             `json:"name"`
			State   bridge.LinkState   `json:"state"`
			Account bridge.LinkAccount `json:"account"`
			Who     string             `json:"who"`
			Detail  string             `json:"detail"`
			CanLink bool               `json:"can_link"`
		} `json:"links"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("links: %d %s (%v)", resp.StatusCode, body, err)
	}
	want := map[string]bool{"phone": true, "work": true, "home": false}
	if len(got.Links) != 3 {
		t.Fatalf("links: %s", body)
	}
	for _, l := range got.Links {
		if l.CanLink != want[l.Name] {
			t.Errorf("link %s (%s): can_link %v, want %v", l.Name, l.State, l.CanLink, want[l.Name])
		}
	}
	if got.Links[2].Account.Name != "Bob" || got.Links[2].Who != "+15550001111 (Bob)" {
		t.Errorf("home's account: %+v, in words %q", got.Links[2].Account, got.Links[2].Who)
	}
	// The page shows words the daemon chose, not codes it would have to
	// know.
	if want := "removed from the phone's linked devices (device removed); run `phonebridge link work`"; got.Links[1].Detail != want {
		t.Errorf("work's detail %q, want %q", got.Links[1].Detail, want)
	}
}

func TestLoginForm(t *testing.T) {
	s := serveTest(t, newFakeAdmin())
	form := func(token, origin string) (*http.Response, string) {
		h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
		if origin != "" {
			h.Set("Origin", origin)
		}
		return do(t, "POST", s.url+"/login", strings.NewReader(url.Values{"token": {token}}.Encode()), h)
	}
	if resp, body := form("wrong-token-0123456789", s.url); resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 || !strings.Contains(body, "That token is wrong.") {
		t.Errorf("a wrong token: %d %v\n%s", resp.StatusCode, resp.Cookies(), body)
	}
	if resp, body := form(testToken, "http://evil.example"); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 || !strings.Contains(body, "another site") {
		t.Errorf("the right token posted from another site: %d %v %s, want 403", resp.StatusCode, resp.Cookies(), body)
	}
	for _, origin := range []string{s.url, ""} {
		resp, _ := form(testToken, origin)
		if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 || !resp.Cookies()[0].HttpOnly {
			t.Errorf("the right token (Origin %q): %d %v, want 303 with the cookie", origin, resp.StatusCode, resp.Cookies())
		}
	}
	// Behind a TLS proxy the cookie must stay on https.
	h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, "X-Forwarded-Proto": {"https"}}
	resp, _ := do(t, "POST", s.url+"/login", strings.NewReader("token="+testToken), h)
	if c := resp.Cookies(); len(c) != 1 || !c[0].Secure {
		t.Errorf("behind a TLS proxy: cookies %v, want one Secure", c)
	}
}

func TestTokenFileIsGeneratedPrivateAndKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s := serve(t, newFakeAdmin(), config.Web{}, dir)
	path := filepath.Join(dir, "web.token")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	token := strings.TrimSpace(string(b))
	if len(token) < minTokenLength {
		t.Fatalf("generated token %q is short", token)
	}
	if !strings.Contains(s.log.String(), path) || strings.Contains(s.log.String(), token) {
		t.Errorf("the log must name the file and not hold the token:\n%s", s.log)
	}
	check := func(s *served, want int) {
		t.Helper()
		resp, _ := do(t, "GET", s.url+"/?token="+url.QueryEscape(token), nil, nil)
		if resp.StatusCode != want {
			t.Errorf("the file's token: %d, want %d", resp.StatusCode, want)
		}
	}
	check(s, http.StatusSeeOther)

	// A restart reads the same token.
	s2 := serve(t, newFakeAdmin(), config.Web{}, dir)
	check(s2, http.StatusSeeOther)
	if b2, _ := os.ReadFile(path); string(b2) != string(b) {
		t.Errorf("the token file changed on restart: %q, then %q", b, b2)
	}
	// A configured token wins, and the file's no longer opens the page.
	s3 := serve(t, newFakeAdmin(), config.Web{Token: testToken}, dir)
	check(s3, http.StatusUnauthorized)

	// A damaged file is an error that says what to do.
	os.WriteFile(path, []byte("short\n"), 0o600)
	_, err = Start(config.Web{Listen: "127.0.0.1:0"}, dir, newFakeAdmin(), nil)
	if err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Errorf("a short token file: %v", err)
	}
}

func TestOffWithoutListen(t *testing.T) {
	s, err := Start(config.Web{}, t.TempDir(), newFakeAdmin(), nil)
	if s != nil || err != nil {
		t.Fatalf("Start with no listen: %v, %v; want nil, nil", s, err)
	}
	if s.Addr() != nil || s.Close(context.Background()) != nil {
		t.Error("a nil Server must do nothing")
	}
}

func TestWarnsWhenReachableBeyondLoopback(t *testing.T) {
	const warning = "put it behind a TLS proxy"
	local := serve(t, newFakeAdmin(), config.Web{Token: testToken}, t.TempDir())
	if strings.Contains(local.log.String(), warning) {
		t.Errorf("warned on loopback:\n%s", local.log)
	}
	wide := serve(t, newFakeAdmin(), config.Web{Listen: "0.0.0.0:0", Token: testToken}, t.TempDir())
	if logs := wide.log.String(); !strings.Contains(logs, warning) || strings.Count(logs, "level=WARN") != 1 {
		t.Errorf("want one warning line on 0.0.0.0:\n%s", logs)
	}
}

func TestListenInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Start(config.Web{Listen: ln.Addr().String(), Token: testToken}, t.TempDir(), newFakeAdmin(), nil)
	if err == nil || !strings.Contains(err.Error(), "web.listen") {
		t.Errorf("Start on a used port: %v, want an error naming web.listen", err)
	}
}

// dialLink opens the link stream as the page does.
func dialLink(t *testing.T, s *served, c *http.Cookie, query string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	h := withCookie(c)
	h.Set("Origin", s.url)
	return websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(s.url, "http")+"/api/link?"+query, h)
}

func TestLinkStreamRefusals(t *testing.T) {
	s := serveTest(t, newFakeAdmin(testLinks()))
	c := signIn(t, s)
	ws := "ws" + strings.TrimPrefix(s.url, "http") + "/api/link?link=phone"
	for _, tc := range []struct {
		what   string
		url    string
		header http.Header
		status int
		reason string
	}{
		{"another site's page", ws, http.Header{"Cookie": {cookieName + "=" + c.Value}, "Origin": {"http://evil.example"}}, 403, "Origin"},
		{"no Origin", ws, http.Header{"Cookie": {cookieName + "=" + c.Value}}, 403, "Origin"},
		{"no cookie", ws, http.Header{"Origin": {s.url}}, 401, "sign in"},
		{"an unknown link", ws + "x", http.Header{"Cookie": {cookieName + "=" + c.Value}, "Origin": {s.url}}, 404, `no link called \"phonex\"`},
		{"a bad phone", ws + "&phone=12ab", http.Header{"Cookie": {cookieName + "=" + c.Value}, "Origin": {s.url}}, 400, "international"},
	} {
		conn, resp, err := websocket.DefaultDialer.Dial(tc.url, tc.header)
		if err == nil {
			conn.Close()
			t.Errorf("%s: the websocket opened", tc.what)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.reason) || strings.Count(string(body), "\n") != 1 {
			t.Errorf("%s: %d %s, want %d with one line saying %q", tc.what, resp.StatusCode, body, tc.status, tc.reason)
		}
	}
	h := withCookie(c)
	h.Set("Origin", s.url)
	resp, body := do(t, "GET", strings.Replace(ws, "ws", "http", 1), nil, h)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "websocket") {
		t.Errorf("a plain GET of the stream: %d %s", resp.StatusCode, body)
	}
}

func readFrame(t *testing.T, conn *websocket.Conn) frame {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var f frame
	if err := conn.ReadJSON(&f); err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	return f
}

func qrImage(t *testing.T, f frame) []byte {
	t.Helper()
	data, ok := strings.CutPrefix(f.Image, "data:image/png;base64,")
	b, err := base64.StdEncoding.DecodeString(data)
	if f.Type != frameQR || !ok || err != nil {
		t.Fatalf("want a QR frame with a PNG data URL, got %+v (%v)", f, err)
	}
	return b
}

func TestLinkStream(t *testing.T) {
	phone, work, home := testLinks()
	s := serveTest(t, newFakeAdmin(phone, work, home))
	c := signIn(t, s)

	t.Run("QR codes then linked", func(t *testing.T) {
		conn, _, err := dialLink(t, s, c, "link=phone")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		call := phone.nextCall(t)
		if call.opts.Phone != "" {
			t.Errorf("linking by QR code got options %+v", call.opts)
		}
		for _, code := range []string{code1, code2} {
			call.qr(code)
			want, n := wantModules(t, code)
			if got := pngModules(t, qrImage(t, readFrame(t, conn)), n); got != want {
				t.Fatalf("the image is not the QR code of %q", code)
			}
		}
		call.progress(bridge.LinkProgress{Kind: bridge.ProgressWaiting, Reason: bridge.ReasonNetworkDown, Cause: "no route\nto host"})
		if f := readFrame(t, conn); f.Type != frameInfo || f.Message != "Cannot reach the service's servers (no route; to host); retrying with backoff. Check the network, or press Cancel to stop." {
			t.Errorf("info frame %+v", f)
		}
		call.finish <- nil
		if f := readFrame(t, conn); f.Type != frameLinked || *f.Account != linkedAccount || f.Who != linkedAccount.String() {
			t.Errorf("last frame %+v, want linked to %+v", f, linkedAccount)
		}
		_, _, err = conn.ReadMessage()
		if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
			t.Errorf("after the last frame: %v, want a normal close", err)
		}
	})

	t.Run("pairing code then failure", func(t *testing.T) {
		conn, _, err := dialLink(t, s, c, "link=work&phone="+url.QueryEscape("+1 (555) 987-6543"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		call := work.nextCall(t)
		if call.opts.Phone != "+15559876543" {
			t.Errorf("phone %q, want +15559876543", call.opts.Phone)
		}
		call.progress(bridge.LinkProgress{Kind: bridge.ProgressPairingCode, PairingCode: "KJ7QW2ZP"})
		if f := readFrame(t, conn); f.Type != framePairingCode || f.Code != "KJ7Q-W2ZP" {
			t.Errorf("frame %+v, want the pairing code as KJ7Q-W2ZP", f)
		}
		call.finish <- &bridge.LinkError{Reason: bridge.LinkTimedOut}
		if f := readFrame(t, conn); f.Type != frameFailed || f.Reason != string(bridge.LinkTimedOut) || f.Message != "Not linked: timed out: no phone scanned the code; try again" {
			t.Errorf("frame %+v, want failed: %s", f, bridge.LinkTimedOut)
		}
		if !strings.Contains(s.log.String(), "linking from the web page failed") {
			t.Errorf("the failure was not logged:\n%s", s.log)
		}
	})

	t.Run("any other error is linking failed", func(t *testing.T) {
		conn, _, err := dialLink(t, s, c, "link=work")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		work.nextCall(t).finish <- errors.New("stream error:\nconflict")
		if f := readFrame(t, conn); f.Type != frameFailed || f.Reason != string(bridge.LinkFailed) || f.Message != "Not linked: stream error: conflict" {
			t.Errorf("frame %+v", f)
		}
	})

	t.Run("a code too long to draw ends linking", func(t *testing.T) {
		conn, _, err := dialLink(t, s, c, "link=work")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		call := work.nextCall(t)
		call.qr(strings.Repeat("x", 4000))
		call.waitCancelled(t)
		if f := readFrame(t, conn); f.Type != frameFailed || f.Reason != string(bridge.LinkFailed) || !strings.Contains(f.Message, "cannot draw the QR code") {
			t.Errorf("frame %+v", f)
		}
	})

	t.Run("closing the websocket cancels linking", func(t *testing.T) {
		conn, _, err := dialLink(t, s, c, "link=work")
		if err != nil {
			t.Fatal(err)
		}
		call := work.nextCall(t)
		call.qr(code1)
		readFrame(t, conn)
		conn.Close()
		call.waitCancelled(t)
	})
}

func TestCloseCancelsLinking(t *testing.T) {
	phone, _, _ := testLinks()
	s := serveTest(t, newFakeAdmin(phone))
	conn, _, err := dialLink(t, s, signIn(t, s), "link=phone")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	call := phone.nextCall(t)

	// The page reads only after Close returned, so it never answers the
	// close in time: stopping must not wait closeGrace for it.
	ctx, cancel := context.WithTimeout(context.Background(), closeGrace/2)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	call.waitCancelled(t)
	if f := readFrame(t, conn); f.Type != frameFailed || f.Reason != string(bridge.LinkShuttingDown) || f.Message != "Not linked: cancelled: phonebridge is stopping" {
		t.Errorf("frame %+v, want cancelled because phonebridge is stopping", f)
	}
	if _, _, err := conn.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Errorf("close %v, want going away", err)
	}
	if _, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		t.Error("still listening after Close")
	}
}

func TestLinkStreamsAreBounded(t *testing.T) {
	phone, _, _ := testLinks()
	s := serveTest(t, newFakeAdmin(phone))
	c := signIn(t, s)
	for range maxStreams {
		conn, _, err := dialLink(t, s, c, "link=phone")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Reading answers the server's close at once.
		go func() {
			for {
				if _, _, err := conn.ReadMessage(); err != nil {
					return
				}
			}
		}()
	}
	_, resp, err := dialLink(t, s, c, "link=phone")
	if err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("stream %d: %v %v, want 429", maxStreams+1, err, resp)
	}
	// Close ends them all, though the Linker never got to answer them.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}
