package main

import (
	"bytes"
	"database/sql"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	_ "modernc.org/sqlite"

	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/testservers"
)

// notifySocket is a fake systemd: the datagram socket a Type=notify
// service reports to. Its messages arrive on the returned channel.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "pbsd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	msgs := make(chan string, 1024)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return path, msgs
}

// await returns the next notification that starts with prefix.
func await(t *testing.T, msgs <-chan string, prefix string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-msgs:
			if strings.HasPrefix(m, prefix) {
				return m
			}
		case <-timeout:
			t.Fatalf("systemd was not sent %q within 10s", prefix)
		}
	}
}

// TestSystemdReloadAndStatus runs the real binary as systemd would: it
// reports READY with a status line and pings the watchdog; SIGHUP applies
// a new config and `phonebridge reload` refuses a broken one, keeping the
// running config; `phonebridge status` shows it all; SIGTERM says
// STOPPING and exits cleanly within 5 s.
func TestSystemdReloadAndStatus(t *testing.T) {
	bin := daemontest.Binary(t)
	dir := t.TempDir()
	pair := daemontest.WriteAPIPair(t, dir, 1, "")
	sock, msgs := notifySocket(t)
	d := daemontest.StartEnv(t, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=200000"}, bin, "run", "-c", pair.Path)
	if ready := await(t, msgs, "READY=1"); !strings.Contains(ready, "STATUS=connectors: in connected, out connected") {
		t.Errorf("READY came with %q", ready)
	}
	await(t, msgs, "WATCHDOG=1")

	out, stderr, code := daemontest.RunCommand(t, bin, "status", "-c", pair.Path)
	if code != 0 || !strings.Contains(out, "in ") || !strings.Contains(out, "api") || !strings.Contains(out, "Outbox: empty") {
		t.Errorf("status (%d):\n%s%s", code, out, stderr)
	}

	// A third connector and its route, applied by SIGHUP.
	cfg, err := os.ReadFile(pair.Path)
	if err != nil {
		t.Fatal(err)
	}
	more := strings.Replace(string(cfg), "routes:\n", "  third:\n    type: api\n    listen: 127.0.0.1:0\n    token: "+daemontest.Token+"\nroutes:\n", 1) +
		"  - name: third\n    endpoints:\n      - {connector: in, chat: general}\n      - {connector: third, chat: general}\n"
	if err := os.WriteFile(pair.Path, []byte(more), 0o600); err != nil {
		t.Fatal(err)
	}
	d.Signal(syscall.SIGHUP)
	await(t, msgs, "RELOADING=1")
	await(t, msgs, "READY=1")
	out, _, _ = daemontest.RunCommand(t, bin, "status", "-c", pair.Path)
	if !strings.Contains(out, "third") {
		t.Errorf("after SIGHUP the status does not show the new connector:\n%s\n%s", out, d.Logs())
	}
	if !strings.Contains(d.Logs(), "config reloaded") {
		t.Errorf("the reload was not logged:\n%s", d.Logs())
	}

	// A broken config is refused with its problems; the running one stays.
	broken := strings.Replace(more, "connector: third, chat: general", "connector: thrid, chat: general", 1)
	if err := os.WriteFile(pair.Path, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = daemontest.RunCommand(t, bin, "reload", "-c", filepath.Join(dir, "running.yaml"))
	if code == 0 {
		t.Error("reload with no config of its own succeeded")
	}
	// The CLI loads the config to find the socket: point it at a valid
	// copy, as an operator whose edit broke the file would still have.
	if err := os.WriteFile(filepath.Join(dir, "cli.yaml"), []byte(more), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = daemontest.RunCommand(t, bin, "reload", "-c", filepath.Join(dir, "cli.yaml"))
	if code == 0 || !strings.Contains(stderr, "routes[1].endpoints[1].connector") || !strings.Contains(stderr, "running config stays") {
		t.Errorf("reload of a broken config (%d): %s", code, stderr)
	}
	out, _, _ = daemontest.RunCommand(t, bin, "status", "-c", filepath.Join(dir, "cli.yaml"))
	if !strings.Contains(out, "third") || strings.Contains(out, "thrid") {
		t.Errorf("after a refused reload the status is:\n%s", out)
	}

	if !strings.Contains(d.Logs(), "config not reloaded: it has problems") {
		t.Errorf("the refused reload was not logged:\n%s", d.Logs())
	}
	d.Stop(5 * time.Second)
	await(t, msgs, "STOPPING=1")
}

// TestInstallIntoATree: the install script puts the binary, the unit and
// a starting config in place with the right modes; the config is valid
// and keeps its state in /var/lib/phonebridge; systemd accepts the unit;
// a second install keeps the operator's config.
func TestInstallIntoATree(t *testing.T) {
	bin := daemontest.Binary(t)
	dest := t.TempDir()
	install := func() string {
		t.Helper()
		cmd := exec.Command("../../scripts/install.sh")
		cmd.Env = append(os.Environ(), "DESTDIR="+dest, "BIN="+bin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("install.sh: %v\n%s", err, out)
		}
		return string(out)
	}
	install()
	for path, mode := range map[string]os.FileMode{
		"usr/local/bin/phonebridge":              0o755,
		"etc/systemd/system/phonebridge.service": 0o644,
		"etc/phonebridge":                        0o750 | os.ModeDir,
		"etc/phonebridge/config.yaml":            0o640,
	} {
		fi, err := os.Stat(filepath.Join(dest, path))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s has mode %v, want %v", path, fi.Mode(), mode)
		}
	}
	config := filepath.Join(dest, "etc/phonebridge/config.yaml")
	if out, stderr, code := daemontest.RunCommand(t, bin, "config", "validate", "-c", config); code != 0 {
		t.Errorf("the installed config is not valid: %s%s", out, stderr)
	}
	data, _ := os.ReadFile(config)
	if !strings.Contains(string(data), "\nstate_dir: /var/lib/phonebridge\n") {
		t.Error("the installed config does not keep its state in /var/lib/phonebridge, the unit's StateDirectory")
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is missing: install the systemd package")
	}
	unit, _ := os.ReadFile(filepath.Join(dest, "etc/systemd/system/phonebridge.service"))
	for _, want := range []string{"Type=notify", "WatchdogSec=", "StateDirectory=phonebridge", "ConfigurationDirectory=phonebridge",
		"User=phonebridge", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
		"RestrictAddressFamilies=", "SystemCallFilter=@system-service", "ExecReload=/bin/kill -HUP $MAINPID"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %s", want)
		}
	}
	// Verified with ExecStart pointing at the installed binary.
	check := filepath.Join(t.TempDir(), "phonebridge.service")
	os.WriteFile(check, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/phonebridge", filepath.Join(dest, "usr/local/bin/phonebridge"))), 0o644)
	if out, err := exec.Command(analyze, "verify", check).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	os.WriteFile(config, []byte("# mine\n"), 0o640)
	if out := install(); !strings.Contains(out, "kept the existing") {
		t.Errorf("a second install said:\n%s", out)
	}
	if data, _ := os.ReadFile(config); string(data) != "# mine\n" {
		t.Error("a second install overwrote the operator's config")
	}
}

// TestMetricsOfTheRunningBinary scrapes the real binary's metrics after
// one relayed message and parses them as Prometheus does.
func TestMetricsOfTheRunningBinary(t *testing.T) {
	bin := daemontest.Binary(t)
	addr := fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t))
	pair := daemontest.WriteAPIPair(t, t.TempDir(), 1, "metrics:\n  listen: "+addr+"\n")
	d := daemontest.Start(t, bin, "run", "-c", pair.Path)
	if code, answer := postEvent(t, pair.InAddr, textEvent("m1", "counted")); code != http.StatusAccepted {
		t.Fatalf("POST /v1/events: %d %s", code, answer)
	}
	scrape := func() map[string]*dto.MetricFamily {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		parser := expfmt.NewTextParser(model.LegacyValidation)
		families, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatalf("the metrics do not parse: %v", err)
		}
		return families
	}
	sample := func(families map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
		f := families[name]
		if f == nil {
			return -1
		}
	next:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
		return -1
	}
	deadline := time.Now().Add(10 * time.Second)
	var families map[string]*dto.MetricFamily
	for {
		families = scrape()
		// Delivered first, then recorded (the outbox row goes in a batch).
		// A scrape is not one snapshot: collectors run side by side, so
		// the latency histogram may be read before the delivery and the
		// outbox after it. Wait until all three agree.
		delivered := sample(families, "phonebridge_events_out_total", map[string]string{"connector": "out", "kind": "message"}) == 1 &&
			sample(families, "phonebridge_send_duration_seconds", map[string]string{"connector": "out"}) == 1
		if delivered && sample(families, "phonebridge_outbox_depth", map[string]string{"connector": "out"}) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"phonebridge_events_in_total", map[string]string{"connector": "in", "kind": "message"}, 1},
		{"phonebridge_events_out_total", map[string]string{"connector": "out", "kind": "message"}, 1},
		{"phonebridge_send_duration_seconds", map[string]string{"connector": "out"}, 1},
		{"phonebridge_outbox_depth", map[string]string{"connector": "out"}, 0},
		{"phonebridge_connector_state", map[string]string{"connector": "in", "state": "connected"}, 1},
	} {
		if got := sample(families, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	d.Stop(5 * time.Second)
}

// TestStatusWithoutADaemon: status and reload say the daemon is not
// running and how to start it.
func TestStatusWithoutADaemon(t *testing.T) {
	bin := daemontest.Binary(t)
	pair := daemontest.WriteAPIPair(t, t.TempDir(), 1, "")
	for _, cmd := range []string{"status", "reload"} {
		_, stderr, code := daemontest.RunCommand(t, bin, cmd, "-c", pair.Path)
		if code != 1 || !strings.Contains(stderr, "phonebridge is not running") || !strings.Contains(stderr, "phonebridge run -c "+pair.Path) {
			t.Errorf("%s with no daemon (%d): %q", cmd, code, stderr)
		}
	}
}

// TestWebPageOfTheRunningBinary: the daemon serves the link page when
// web.listen is set, behind its token.
func TestWebPageOfTheRunningBinary(t *testing.T) {
	bin := daemontest.Binary(t)
	addr := fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t))
	const token = "web-token-0123456789"
	pair := daemontest.WriteAPIPair(t, t.TempDir(), 1, "web:\n  listen: "+addr+"\n  token: "+token+"\n")
	d := daemontest.Start(t, bin, "run", "-c", pair.Path)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get("http://" + addr + "/api/links")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the links without the token: %d, want 401", resp.StatusCode)
	}
	resp, err = noRedirect.Get("http://" + addr + "/?token=" + token)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cookies := resp.Cookies()
	if len(cookies) == 0 {
		t.Fatalf("signing in with the token set no cookie (%d)", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/links", nil)
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err = noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the links with the cookie: %d, want 200", resp.StatusCode)
	}
	if strings.Contains(d.Logs(), token) {
		t.Error("the daemon logged the web token")
	}
	d.Stop(5 * time.Second)
}

// TestMediaLinksOfTheRunningBinary: the real binary with the media server
// relays an API attachment to IRC (a real ngIRCd) as a link that serves
// the bytes, refuses a guessed link, and stops serving once it expires.
func TestMediaLinksOfTheRunningBinary(t *testing.T) {
	bin := daemontest.Binary(t)
	irc := testservers.StartNgircd(t, testservers.NgircdOptions{})
	mediaAddr := fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t))
	extra := fmt.Sprintf(`media:
  listen: %s
  public_url: http://%s/files
  expiry: 3s
`, mediaAddr, mediaAddr)
	pair := daemontest.WriteAPIPair(t, t.TempDir(), 1, "")
	// An irc connector and a route from the API's "general" to #general.
	cfg, _ := os.ReadFile(pair.Path)
	withIRC := extra + strings.Replace(string(cfg), "routes:\n", fmt.Sprintf("  irc:\n    type: irc\n    server: %s\n    tls: false\n    nick: wabridge\nroutes:\n", irc.Addr()), 1) +
		"  - name: irc\n    endpoints:\n      - {connector: in, chat: general}\n      - {connector: irc, chat: \"#general\"}\n"
	if err := os.WriteFile(pair.Path, []byte(withIRC), 0o600); err != nil {
		t.Fatal(err)
	}
	watcher := daemontest.DialIRC(t, irc.Addr(), "watcher", "#general")
	d := daemontest.Start(t, bin, "run", "-c", pair.Path)
	watcher.Await(t, func(line string) bool {
		return strings.Contains(line, " JOIN ") && strings.HasPrefix(line, ":wabridge!")
	})

	photo := []byte("\x89PNG\r\n\x1a\nnot really a picture")
	body := fmt.Sprintf(`{"id":"p1","kind":"message","chat":"general","sender":{"id":"ann","name":"Ann"},"media":[{"mime":"image/png","name":"cat.png","data":%q}]}`,
		base64.StdEncoding.EncodeToString(photo))
	if code, answer := postEvent(t, pair.InAddr, body); code != http.StatusAccepted {
		t.Fatalf("POST /v1/events: %d %s", code, answer)
	}
	line := watcher.Await(t, func(line string) bool {
		return strings.Contains(line, "PRIVMSG #general") && strings.Contains(line, "http://")
	})
	link := line[strings.Index(line, "http://"):]
	if i := strings.IndexAny(link, " )\x0f"); i >= 0 {
		link = link[:i]
	}
	get := func(u string) (int, []byte) {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, data
	}
	// The proxy the public URL stands for strips /files.
	direct := strings.Replace(link, "/files/", "/", 1)
	if code, data := get(direct); code != 200 || !bytes.Equal(data, photo) {
		t.Fatalf("the link %s served %d, %d bytes; want the photo (IRC line %q)", link, code, len(data), line)
	}
	id := strings.Split(strings.TrimPrefix(direct, "http://"+mediaAddr+"/"), "/")[0]
	guess := []byte(id)
	guess[0] ^= 1
	if code, _ := get("http://" + mediaAddr + "/" + string(guess) + "/cat.png"); code != 404 {
		t.Errorf("a guessed link answered %d, want 404", code)
	}
	time.Sleep(3500 * time.Millisecond) // past the 3 s expiry
	if code, _ := get(direct); code != 404 {
		t.Errorf("the expired link answered %d, want 404", code)
	}
	d.Stop(5 * time.Second)
}

// TestSecretsStayOutOfLogsAndStatus runs the real binary with every kind
// of secret configured and scans what it prints, at debug level, and what
// `status` shows.
func TestSecretsStayOutOfLogsAndStatus(t *testing.T) {
	bin := daemontest.Binary(t)
	irc := testservers.StartNgircd(t, testservers.NgircdOptions{})
	const (
		webToken = "web-secret-0123456789abcdef"
		ircPass  = "irc-secret-0123456789abcdef"
		nickserv = "nickserv-secret-0123456789"
	)
	pair := daemontest.WriteAPIPair(t, t.TempDir(), 1, "")
	cfg, _ := os.ReadFile(pair.Path)
	secrets := fmt.Sprintf("log:\n  level: debug\nweb:\n  listen: 127.0.0.1:%d\n  token: %s\n", daemontest.FreePort(t), webToken) +
		strings.Replace(string(cfg), "routes:\n", fmt.Sprintf("  irc:\n    type: irc\n    server: %s\n    tls: false\n    nick: wabridge\n    password: %s\n    nickserv_password: %s\nroutes:\n", irc.Addr(), ircPass, nickserv), 1) +
		"  - name: irc\n    endpoints:\n      - {connector: in, chat: general}\n      - {connector: irc, chat: \"#general\"}\n"
	if err := os.WriteFile(pair.Path, []byte(secrets), 0o600); err != nil {
		t.Fatal(err)
	}
	d := daemontest.Start(t, bin, "run", "-c", pair.Path)
	postEvent(t, pair.InAddr, textEvent("s1", "hi"))
	status, _, _ := daemontest.RunCommand(t, bin, "status", "--json", "-c", pair.Path)
	human, _, _ := daemontest.RunCommand(t, bin, "status", "-c", pair.Path)
	d.Stop(5 * time.Second)
	for _, secret := range []string{daemontest.Token, webToken, ircPass, nickserv} {
		for what, text := range map[string]string{"the log": d.Logs(), "status --json": status, "status": human} {
			if strings.Contains(text, secret) {
				t.Errorf("%s shows the secret %q", what, secret)
			}
		}
	}
	if !strings.Contains(d.Logs(), "level=DEBUG") {
		t.Error("the daemon did not log at debug level: the scan proves little")
	}
}

// TestStateDirWritableByOthersStopsTheDaemon: the daemon refuses to start
// on a state_dir others may write to.
func TestStateDirWritableByOthersStopsTheDaemon(t *testing.T) {
	bin := daemontest.Binary(t)
	dir := t.TempDir()
	pair := daemontest.WriteAPIPair(t, dir, 1, "")
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chmod(state, 0o777)
	_, stderr, code := daemontest.RunCommand(t, bin, "run", "-c", pair.Path)
	if code != 1 || !strings.Contains(stderr, "writable by others") {
		t.Errorf("run on a world-writable state_dir (%d): %s", code, stderr)
	}
}

// TestLockedDatabaseRefusesRatherThanLoses: while another process holds
// the database locked past SQLite's busy timeout (10 s), an event is
// refused with 503 and a reason, not acknowledged; once the lock goes,
// events are accepted and delivered again.
func TestLockedDatabaseRefusesRatherThanLoses(t *testing.T) {
	bin := daemontest.Binary(t)
	pair := daemontest.WriteAPIPair(t, t.TempDir(), 1, "")
	d := daemontest.Start(t, bin, "run", "-c", pair.Path)
	db, err := sql.Open("sqlite", filepath.Join(filepath.Dir(pair.Path), "state", "phonebridge.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(t.Context(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	post := func(id string) (int, string) { return postEvent(t, pair.InAddr, textEvent(id, id)) }
	if code, body := post("locked"); code != http.StatusServiceUnavailable || !strings.Contains(body, "did not take the event") {
		t.Errorf("an event while the database is locked: %d %s, want 503 with the reason", code, body)
	}
	if _, err := conn.ExecContext(t.Context(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if code, body := post("after"); code != http.StatusAccepted {
		t.Fatalf("an event after the lock went: %d %s", code, body)
	}
	out, err := daemontest.Dial(pair.OutAddr, daemontest.Token)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := out.Subscribe("general", 0); err != nil {
		t.Fatal(err)
	}
	var texts []string
	timeout := time.After(10 * time.Second)
	for len(texts) == 0 || texts[len(texts)-1] != "after" {
		select {
		case f := <-out.Events:
			if f.Event != nil {
				texts = append(texts, f.Event.Text)
			}
		case <-timeout:
			t.Fatalf("the API received %q, want the event sent after the lock", texts)
		}
	}
	if fmt.Sprint(texts) != "[after]" {
		t.Errorf("the API received %q, want only the accepted event", texts)
	}
	d.Stop(5 * time.Second)
}

// postEvent posts one API event body to the api connector at addr and
// returns the status and the answer.
func postEvent(t *testing.T, addr, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/events", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+daemontest.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(answer)
}

// textEvent is an API message event from Ann in general.
func textEvent(id, text string) string {
	return `{"id":"` + id + `","kind":"message","chat":"general","sender":{"id":"ann","name":"Ann"},"text":"` + text + `"}`
}

// TestReloadChangesTheLogLevel: a reload applies log.level at once (an
// operator turns on debug to look at a problem without a restart), unless
// --log-level fixed it on the command line; then the reload says it waits
// for the next start.
func TestReloadChangesTheLogLevel(t *testing.T) {
	bin := daemontest.Binary(t)
	for _, c := range []struct {
		name    string
		args    []string
		applied bool
	}{
		{"from the config", nil, true},
		{"fixed by --log-level", []string{"--log-level", "info"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			pair := daemontest.WriteAPIPair(t, t.TempDir(), 1, "")
			d := daemontest.Start(t, bin, append([]string{"run", "-c", pair.Path}, c.args...)...)
			const debugLine = "websocket client connected"
			connect := func() {
				t.Helper()
				cl, err := daemontest.Dial(pair.InAddr, daemontest.Token)
				if err != nil {
					t.Fatal(err)
				}
				cl.Close()
			}
			connect()
			cfg, err := os.ReadFile(pair.Path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(pair.Path, append(cfg, "log:\n  level: debug\n"...), 0o600); err != nil {
				t.Fatal(err)
			}
			out, stderr, code := daemontest.RunCommand(t, bin, "reload", "-c", pair.Path)
			if code != 0 {
				t.Fatalf("reload (%d): %s%s", code, out, stderr)
			}
			if waits := strings.Contains(out, "log.level"); waits == c.applied {
				t.Errorf("reload said %q; log.level applied now: %v", out, c.applied)
			}
			connect()
			d.Stop(5 * time.Second) // the whole log is in once the process is gone
			if n := strings.Count(d.Logs(), debugLine); c.applied && n != 1 || !c.applied && n != 0 {
				t.Errorf("%d debug lines %q after the reload, want %d (only the connection made after it)\n%s", n, debugLine, map[bool]int{true: 1}[c.applied], d.Logs())
			}
		})
	}
}
