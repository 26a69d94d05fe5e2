//go:build linux

package webui

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// browser is a headless Chromium driven over the Chrome DevTools
// Protocol: just the calls these tests need.
type browser struct {
	conn *websocket.Conn
	wmu  sync.Mutex

	mu      sync.Mutex
	nextID  int64
	waiting map[int64]chan cdpReply
	broken  error
}

type cdpReply struct {
	ID     int64           `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// startBrowser runs Chromium in its own process group and temporary
// profile; cleanup closes it, kills the group if it lingers, and removes
// the profile.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: run scripts/test-deps.sh (Debian's chromium package)")
	}
	profile := t.TempDir()
	cmd := exec.Command(bin, "--headless=new", "--remote-debugging-port=0", "--user-data-dir="+profile,
		"--no-sandbox", "--no-first-run", "--no-default-browser-check", "--disable-gpu",
		"--disable-extensions", "--disable-background-networking", "--disable-sync", "about:blank")
	// Its own group, so cleanup reaches the renderers too; and killed
	// with the test binary if that dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out := &devtoolsURL{found: make(chan string, 1)}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	var b *browser
	// Registered after TempDir, so it runs first: the profile is removed
	// only once Chromium is gone.
	t.Cleanup(func() {
		if b != nil {
			// Closed this way, Chromium reaps its own children, which
			// a container's init may leave as zombies.
			b.call("", "Browser.close", nil, nil)
			b.conn.Close()
		}
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			// Still running, so the group id is still its own.
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})

	var wsURL string
	select {
	case wsURL = <-out.found:
	case <-exited:
		t.Fatalf("chromium exited at start; its last lines:\n%s", out.tail())
	case <-time.After(20 * time.Second):
		t.Fatalf("chromium did not open its DevTools port in 20s; its last lines:\n%s", out.tail())
	}
	conn, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		t.Fatalf("connect to chromium's DevTools: %v", err)
	}
	b = &browser{conn: conn, waiting: map[int64]chan cdpReply{}}
	go b.read()
	return b
}

// devtoolsURL watches Chromium's stderr for the DevTools address and
// keeps the last lines for failure messages.
type devtoolsURL struct {
	found chan string
	mu    sync.Mutex
	buf   []byte
	lines []string
}

func (d *devtoolsURL) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.buf = append(d.buf, p...)
	for {
		line, rest, ok := bytes.Cut(d.buf, []byte("\n"))
		if !ok {
			return len(p), nil
		}
		d.buf = rest
		if _, u, ok := strings.Cut(string(line), "DevTools listening on "); ok {
			select {
			case d.found <- strings.TrimSpace(u):
			default:
			}
		}
		d.lines = append(d.lines[max(0, len(d.lines)-19):], string(line))
	}
}

func (d *devtoolsURL) tail() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.lines, "\n")
}

// read hands each reply to its caller; events are not used.
func (b *browser) read() {
	for {
		var r cdpReply
		if err := b.conn.ReadJSON(&r); err != nil {
			b.mu.Lock()
			b.broken = err
			for _, ch := range b.waiting {
				close(ch)
			}
			b.waiting = nil
			b.mu.Unlock()
			return
		}
		b.mu.Lock()
		ch := b.waiting[r.ID]
		delete(b.waiting, r.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// call sends method to the browser (session "") or a page's session and
// decodes the result into out, if not nil.
func (b *browser) call(session, method string, params, out any) error {
	b.mu.Lock()
	if b.broken != nil {
		b.mu.Unlock()
		return fmt.Errorf("%s: the DevTools connection is gone: %w", method, b.broken)
	}
	b.nextID++
	id := b.nextID
	ch := make(chan cdpReply, 1)
	b.waiting[id] = ch
	b.mu.Unlock()

	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	b.wmu.Lock()
	err := b.conn.WriteJSON(msg)
	b.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case r, ok := <-ch:
		switch {
		case !ok:
			return fmt.Errorf("%s: the DevTools connection closed", method)
		case r.Error != nil:
			return fmt.Errorf("%s: %s", method, r.Error.Message)
		case out != nil:
			return json.Unmarshal(r.Result, out)
		}
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s: no answer in 10s", method)
	}
}

// tab is one page; isolated tabs have a cookie jar of their own.
type tab struct {
	t       *testing.T
	b       *browser
	session string
}

func (b *browser) newTab(t *testing.T, isolated bool) *tab {
	t.Helper()
	params := map[string]any{"url": "about:blank"}
	if isolated {
		var ctx struct{ BrowserContextID string }
		if err := b.call("", "Target.createBrowserContext", map[string]any{}, &ctx); err != nil {
			t.Fatal(err)
		}
		params["browserContextId"] = ctx.BrowserContextID
	}
	var target struct{ TargetID string }
	if err := b.call("", "Target.createTarget", params, &target); err != nil {
		t.Fatal(err)
	}
	var att struct{ SessionID string }
	if err := b.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		t.Fatal(err)
	}
	return &tab{t: t, b: b, session: att.SessionID}
}

func (p *tab) navigate(url string) {
	p.t.Helper()
	var r struct{ ErrorText string }
	if err := p.b.call(p.session, "Page.navigate", map[string]any{"url": url}, &r); err != nil || r.ErrorText != "" {
		p.t.Fatalf("navigate to %s: %v %s", url, err, r.ErrorText)
	}
}

// eval runs a JavaScript expression (awaiting a promise) and decodes its
// value into out, if not nil.
func (p *tab) eval(expr string, out any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.b.call(p.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &r)
	if err != nil {
		return err
	}
	if e := r.ExceptionDetails; e != nil {
		return fmt.Errorf("%s %s", e.Text, e.Exception.Description)
	}
	if out != nil {
		return json.Unmarshal(r.Result.Value, out)
	}
	return nil
}

// must evaluates expr, failing the test on an error.
func (p *tab) must(expr string, out any) {
	p.t.Helper()
	if err := p.eval(expr, out); err != nil {
		p.t.Fatalf("%s: %v", expr, err)
	}
}

// waitFor polls a JavaScript condition until it is true, across page
// loads, or fails the test after 10 s saying what it waited for.
func (p *tab) waitFor(what, cond string) {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		var ok bool
		if last = p.eval("!!("+cond+")", &ok); last == nil && ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	var page string
	p.eval("location.href + '\\n' + document.body?.innerText", &page)
	p.t.Fatalf("waited 10s for %s (%.120s; last error %v); the page:\n%s", what, cond, last, page)
}
