package ircconn

import (
	"context"
	"crypto/tls"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

// TestNoGoroutineLeak runs a client through registration, a kick (its
// rejoin timer pending), a Send in flight, a reconnect and a stop, and
// checks that nothing it started outlives Run. It is not parallel, so the
// count is its own.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	// A subtest, so that its cleanups (the fake server's) run before the
	// count.
	t.Run("lifecycle", func(t *testing.T) {
		f := dialFake(t, nil, func(cfg *Config) {
			cfg.Channels = map[string]string{"#c": ""}
			cfg.NickRegainInterval = time.Hour
		})
		r, c, fc := f.r, f.c, f.fc
		fc.register(t, "pb_") // someone holds pb: the regain timer runs
		fc.expect(t, "JOIN")
		fc.send(":pb_!u@h JOIN #c", ":op!o@h KICK #c pb_ :out")
		r.waitState(t, StateRegistered, "rejoining in")
		res := sendAsync(context.Background(), c, privmsg("#c", "in flight"))
		fc.expect(t, "PING")
		fc.close()
		if err := result(t, res); err == nil {
			t.Error("Send confirmed without a PONG")
		}
		f.fs.accept(t).register(t, "pb")
		r.waitState(t, StateRegistered, "registered as pb")
		c.stop(t)
	})
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	cert := selfSigned(t, "pb")
	ok := Config{Addr: "irc.example.net:6697", Nick: "pb", TLS: true}
	for _, tc := range []struct {
		name   string
		mutate func(c *Config)
		want   string // in the error; "" for no error
	}{
		{"valid", func(c *Config) {}, ""},
		{"fingerprint with colons and lower case", func(c *Config) {
			c.TLSFingerprint = strings.Repeat("ab:", 31) + "ab"
		}, ""},
		{"address without port", func(c *Config) { c.Addr = "irc.example.net" }, "host:port"},
		{"no nick", func(c *Config) { c.Nick = "" }, "nick"},
		{"nick with a space", func(c *Config) { c.Nick = "a b" }, "nick"},
		{"EXTERNAL without a certificate", func(c *Config) { c.SASL = SASLExternal }, "client certificate"},
		{"PLAIN without a password", func(c *Config) { c.SASL, c.SASLUser = SASLPlain, "u" }, "SASL user and password"},
		{"unknown mechanism", func(c *Config) { c.SASL = "SCRAM-SHA-256" }, "unknown SASL mechanism"},
		{"short fingerprint", func(c *Config) { c.TLSFingerprint = "abcd" }, "SHA-256"},
		{"fingerprint not hex", func(c *Config) { c.TLSFingerprint = strings.Repeat("zz", 32) }, "SHA-256"},
		{"client certificate without TLS", func(c *Config) { c.TLS, c.ClientCert = false, &cert }, "need TLS"},
		{"pin without TLS", func(c *Config) { c.TLS, c.TLSFingerprint = false, strings.Repeat("ab", 32) }, "need TLS"},
		{"channel with a comma", func(c *Config) { c.Channels = map[string]string{"#a,#b": ""} }, "channel"},
		{"key with a space", func(c *Config) { c.Channels = map[string]string{"#a": "k k"} }, "key"},
		{"password with a newline", func(c *Config) { c.ServerPassword = "a\r\nQUIT" }, "server password"},
		{"max below min", func(c *Config) { c.ReconnectMin, c.ReconnectMax = time.Minute, time.Second }, "reconnect"},
		{"negative duration", func(c *Config) { c.PingTimeout = -1 }, "negative"},
	} {
		cfg := ok
		tc.mutate(&cfg)
		_, err := New(cfg, newRecorder(t))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one about %q", tc.name, err, tc.want)
		}
	}
	if _, err := New(ok, nil); err == nil {
		t.Error("New without a Handler succeeded")
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := New(Config{Addr: "h:1", Nick: "pb"}, newRecorder(t))
	if err != nil {
		t.Fatal(err)
	}
	got := c.cfg
	if got.PingInterval != 90*time.Second || got.PingTimeout != 60*time.Second ||
		got.ReconnectMin != 2*time.Second || got.ReconnectMax != 5*time.Minute ||
		got.KickRejoinDelay != 10*time.Second || got.NickRegainInterval != time.Minute ||
		got.FloodBurst != 5 || got.FloodRate != 0.5 || got.User != "pb" || got.RealName != "phonebridge" {
		t.Errorf("defaults: %+v", got)
	}
	if c.State() != StateDisconnected || c.Nick() != "pb" || len(c.Channels()) != 0 || c.HasCap("sasl") {
		t.Error("a new Client is not idle")
	}
	if err := c.Run(canceled()); err != nil {
		t.Errorf("Run with a done context: %v", err)
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func TestRunTwiceIsRefused(t *testing.T) {
	t.Parallel()
	f := dialFake(t, nil, nil)
	if err := f.c.Run(context.Background()); err == nil {
		t.Error("a second Run was allowed")
	}
}

func TestBucket(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	b := bucket{burst: 2, rate: 4}
	b.refill(now)
	var waits []time.Duration
	for range 5 {
		waits = append(waits, b.reserve(now))
	}
	want := []time.Duration{0, 0, 250 * time.Millisecond, 500 * time.Millisecond, 750 * time.Millisecond}
	if !slices.Equal(waits, want) {
		t.Errorf("waits %v, want %v", waits, want)
	}
	b.unreserve() // the last one gave up
	// A second later: 4 tokens earned, 2 owed, so 2 in hand.
	now = now.Add(time.Second)
	if w := b.reserve(now); w != 0 {
		t.Errorf("wait %v after refilling", w)
	}
	if w := b.reserve(now); w != 0 {
		t.Errorf("wait %v for the second refilled token", w)
	}
	if w := b.reserve(now); w != 250*time.Millisecond {
		t.Errorf("wait %v once empty again", w)
	}
	// Idle time never saves up beyond the burst.
	now = now.Add(time.Hour)
	b.reserve(now)
	b.reserve(now)
	if w := b.reserve(now); w == 0 {
		t.Error("the bucket held more than its burst")
	}
	off := bucket{burst: 1, rate: -1}
	for range 100 {
		if w := off.reserve(now); w != 0 {
			t.Fatal("pacing off, yet a wait")
		}
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	var b backoff
	lo, hi := 2*time.Second, 5*time.Minute
	for i := range 20 {
		d := b.next(lo, hi)
		ceil := min(lo<<i, hi)
		if d < ceil/2 || d > ceil {
			t.Errorf("attempt %d: %v outside [%v, %v]", i, d, ceil/2, ceil)
		}
	}
	b.reset()
	if d := b.next(lo, hi); d > lo {
		t.Errorf("after reset %v", d)
	}
}

func TestFold(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ casemap, in, want string }{
		{"rfc1459", "Nick[]\\~", "nick{}|^"},
		{"rfc1459-strict", "Nick[]\\~", "nick{}|~"},
		{"ascii", "Nick[]\\~", "nick[]\\~"},
		{"unknown", "AB[", "ab{"},
		{"rfc1459", "already-folded", "already-folded"},
		{"rfc1459", "#Ünïcode", "#Ünïcode"},
	} {
		if got := foldCase(tc.casemap, tc.in); got != tc.want {
			t.Errorf("foldCase(%s, %q) = %q, want %q", tc.casemap, tc.in, got, tc.want)
		}
	}
}

func TestAltNick(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		nick       string
		try, limit int
		want       string
	}{
		{"pb", 0, 30, "pb"},
		{"pb", 1, 30, "pb_"},
		{"pb", 2, 30, "pb_2"},
		{"pb", 12, 30, "pb_12"},
		{"ninechars", 1, 9, "ninechar_"},
		{"ninechars", 2, 9, "ninecha_2"},
		{"ab", 10, 3, "a_10"}, // never below one character of the nick
	} {
		if got := altNick(tc.nick, tc.try, tc.limit); got != tc.want {
			t.Errorf("altNick(%q, %d, %d) = %q, want %q", tc.nick, tc.try, tc.limit, got, tc.want)
		}
	}
}

func TestAuthenticateChunks(t *testing.T) {
	t.Parallel()
	if got := authenticateChunks(nil); !slices.Equal(got, []string{"+"}) {
		t.Errorf("empty payload: %v", got)
	}
	// 300 bytes encode to exactly 400: a "+" must follow.
	got := authenticateChunks(make([]byte, 300))
	if len(got) != 2 || len(got[0]) != 400 || got[1] != "+" {
		t.Errorf("400-byte encoding: %d chunks, last %q", len(got), got[len(got)-1])
	}
	got = authenticateChunks(make([]byte, 301))
	if len(got) != 2 || len(got[0]) != 400 || len(got[1]) != 4 {
		t.Errorf("401+ bytes: %v", got)
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		m    *ircmsg.Message
		want string
	}{
		{&ircmsg.Message{Command: "PASS", Params: []string{"pw"}}, "PASS <redacted>"},
		{&ircmsg.Message{Command: "AUTHENTICATE", Params: []string{"dXNlcg=="}}, "AUTHENTICATE <redacted>"},
		{&ircmsg.Message{Command: "AUTHENTICATE", Params: []string{"PLAIN"}}, "AUTHENTICATE PLAIN"},
		{privmsg("NickServ", "IDENTIFY pb pw"), "PRIVMSG NickServ <redacted>"},
		{privmsg("nickserv@services.", "REGISTER pw e@mail"), "PRIVMSG nickserv@services. <redacted>"},
		{privmsg("#c", "identify yourself"), "PRIVMSG #c <redacted>"},
		{privmsg("#c", "hello"), "PRIVMSG #c hello"},
	} {
		if got := redact(tc.m); got != tc.want {
			t.Errorf("redact(%v) = %q, want %q", tc.m, got, tc.want)
		}
	}
}

func TestFmtDuration(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		5 * time.Minute: "5m", 8 * time.Second: "8s", 90 * time.Second: "1m30s",
		2 * time.Hour: "2h", 250 * time.Millisecond: "250ms", 7900 * time.Millisecond: "8s",
	} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestTLSConfig checks the settings TLS is built with: the server name from
// the address, the client certificate, and verification replaced only by
// an explicit pin or the insecure flag.
func TestTLSConfig(t *testing.T) {
	t.Parallel()
	cert := selfSigned(t, "pb")
	c, err := New(Config{Addr: "irc.example.net:6697", Nick: "pb", TLS: true, ClientCert: &cert}, newRecorder(t))
	if err != nil {
		t.Fatal(err)
	}
	tc := c.tlsConf
	if tc.ServerName != "irc.example.net" || tc.InsecureSkipVerify || len(tc.Certificates) != 1 || tc.MinVersion < tls.VersionTLS12 {
		t.Errorf("TLS config %+v", tc)
	}
}
