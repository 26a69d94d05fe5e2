package irc

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phonebridge/phonebridge/bridge"
	_ "github.com/phonebridge/phonebridge/connectors/api" // the api connector type
	"github.com/phonebridge/phonebridge/connectors/irc/ircconn"
	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/testservers"
)

// End to end: the real core with an api connector and this connector,
// against a real ngIRCd, with a plain IRC client (observer) in the
// channels and a websocket client on the API.

const e2eWait = 30 * time.Second

// observer is a person on IRC: a raw connection that answers PINGs and
// queues every other line.
type observer struct {
	addr, nick string
	chans      []string

	mu    sync.Mutex
	conn  net.Conn
	lines chan *ircmsg.Message
	// raw lengths of PRIVMSG lines as received, CRLF included.
	sizes chan int
}

func dialObserver(t testing.TB, addr, nick string, chans ...string) *observer {
	t.Helper()
	o := &observer{addr: addr, nick: nick, chans: chans, lines: make(chan *ircmsg.Message, 1<<16), sizes: make(chan int, 1<<16)}
	o.connect(t)
	t.Cleanup(func() { o.close() })
	return o
}

// connect registers and joins the channels, waiting for each JOIN.
func (o *observer) connect(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(e2eWait)
	var conn net.Conn
	for {
		var err error
		if conn, err = net.DialTimeout("tcp", o.addr, time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("observer cannot reach %s: %v", o.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	o.mu.Lock()
	o.conn = conn
	o.mu.Unlock()
	fmt.Fprintf(conn, "NICK %s\r\nUSER %s 0 * :observer\r\n", o.nick, o.nick)
	go o.read(conn)
	o.expect(t, "welcome", func(m *ircmsg.Message) bool { return m.Command == "001" })
	for _, ch := range o.chans {
		o.raw(t, "JOIN "+ch)
		o.expect(t, "its join of "+ch, func(m *ircmsg.Message) bool { return m.Command == "JOIN" && m.Nick() == o.nick })
	}
}

func (o *observer) read(conn net.Conn) {
	r := bufio.NewReaderSize(conn, 1<<16)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		m, err := ircmsg.Parse(line)
		if err != nil {
			continue
		}
		if m.Command == "PING" {
			fmt.Fprintf(conn, "PONG :%s\r\n", m.Trailing())
			continue
		}
		if m.Command == "PRIVMSG" {
			select {
			case o.sizes <- len(line):
			default: // only tests that drain it look
			}
		}
		o.lines <- m
	}
}

func (o *observer) raw(t testing.TB, line string) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, err := fmt.Fprintf(o.conn, "%s\r\n", line); err != nil {
		t.Fatal(err)
	}
}

func (o *observer) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.conn != nil {
		o.conn.Close()
	}
}

// expect waits for a line that matches, skipping others.
func (o *observer) expect(t testing.TB, what string, match func(*ircmsg.Message) bool) *ircmsg.Message {
	t.Helper()
	timeout := time.After(e2eWait)
	for {
		select {
		case m := <-o.lines:
			if match(m) {
				return m
			}
		case <-timeout:
			t.Fatalf("observer %s did not see %s within %v", o.nick, what, e2eWait)
		}
	}
}

// fromBridge matches the bridge's PRIVMSGs to channel.
func fromBridge(channel string) func(*ircmsg.Message) bool {
	return func(m *ircmsg.Message) bool {
		return m.Command == "PRIVMSG" && m.Nick() == "wabridge" && m.Param(0) == channel
	}
}

// apiEvent and apiFrame are the API's wire format as far as the tests
// need it, emote and notice included.
type apiEvent struct {
	ID     string                  `json:"id,omitempty"`
	Kind   string                  `json:"kind,omitempty"`
	Chat   string                  `json:"chat,omitempty"`
	Sender *daemontest.WireSender  `json:"sender,omitempty"`
	Text   string                  `json:"text,omitempty"`
	HTML   string                  `json:"html,omitempty"`
	Emote  bool                    `json:"emote,omitempty"`
	Notice bool                    `json:"notice,omitempty"`
	Origin *map[string]interface{} `json:"origin,omitempty"`
}

type apiFrame struct {
	Type  string    `json:"type"`
	Chat  string    `json:"chat,omitempty"`
	Error string    `json:"error,omitempty"`
	Event *apiEvent `json:"event,omitempty"`
}

// apiClient is a websocket client of the api connector.
type apiClient struct {
	ws      *websocket.Conn
	writeMu sync.Mutex
	events  chan apiFrame
	other   chan apiFrame
}

func dialAPI(t testing.TB, addr string, chats ...string) *apiClient {
	t.Helper()
	ws, err := daemontest.DialRaw(addr, daemontest.Token)
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(64 << 20)
	c := &apiClient{ws: ws, events: make(chan apiFrame, 1<<16), other: make(chan apiFrame, 1<<16)}
	t.Cleanup(func() { ws.Close() })
	go func() {
		for {
			var f apiFrame
			if err := ws.ReadJSON(&f); err != nil {
				close(c.other)
				return
			}
			if f.Type == "event" {
				c.events <- f
			} else {
				c.other <- f
			}
		}
	}()
	for _, chat := range chats {
		c.write(t, map[string]any{"type": "subscribe", "chat": chat})
		if f := c.reply(t); f.Type != "subscribed" {
			t.Fatalf("subscribe %s: %+v", chat, f)
		}
	}
	return c
}

func (c *apiClient) write(t testing.TB, v any) {
	t.Helper()
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := c.ws.WriteJSON(v); err != nil {
		t.Fatal(err)
	}
}

func (c *apiClient) reply(t testing.TB) apiFrame {
	t.Helper()
	select {
	case f, ok := <-c.other:
		if !ok {
			t.Fatal("the API connection closed")
		}
		return f
	case <-time.After(e2eWait):
		t.Fatal("no answer from the API")
	}
	return apiFrame{}
}

// send sends ev from "Ann" unless it names a sender, and waits for the ack.
func (c *apiClient) send(t testing.TB, ev apiEvent) {
	t.Helper()
	c.sendAsync(t, ev)
	if f := c.reply(t); f.Type != "ack" {
		t.Fatalf("send %s: %+v", ev.ID, f)
	}
}

func (c *apiClient) sendAsync(t testing.TB, ev apiEvent) {
	t.Helper()
	if ev.Kind == "" {
		ev.Kind = "message"
	}
	if ev.Sender == nil {
		ev.Sender = &daemontest.WireSender{ID: "ann", Name: "Ann"}
	}
	c.write(t, map[string]any{"type": "send", "ref": ev.ID, "event": ev})
}

// event waits for the next event delivered in chat.
func (c *apiClient) event(t testing.TB, chat string) *apiEvent {
	t.Helper()
	timeout := time.After(e2eWait)
	for {
		select {
		case f := <-c.events:
			if f.Event != nil && f.Chat == chat {
				return f.Event
			}
		case <-timeout:
			t.Fatalf("no event in %s within %v", chat, e2eWait)
		}
	}
}

// e2e is a bridge joining API chats to IRC channels on one IRC server.
type e2e struct {
	srv     testservers.IRCServer
	cfgPath string
	apiAddr string
	b       *bridge.Bridge
	irc     *Connector
	api     *apiClient
	obs     *observer
	// gate, while open, holds the bridge's dials to the IRC server.
	gate atomic.Pointer[chan struct{}]
	// pings and privmsgs count the barrier PINGs and the PRIVMSGs the
	// bridge's connections wrote.
	pings, privmsgs atomic.Int64
	// puppetDial, when set, dials the puppets' connections instead.
	puppetDial atomic.Pointer[func(ctx context.Context, network, addr string) (net.Conn, error)]
}

// countingConn counts the lines the bridge writes. The client writes
// whole lines in each Write.
type countingConn struct {
	net.Conn
	r *e2e
}

func (c countingConn) Write(p []byte) (int, error) {
	for line := range strings.SplitSeq(string(p), "\r\n") {
		switch {
		case strings.HasPrefix(line, "PING pb"):
			c.r.pings.Add(1)
		case strings.HasPrefix(line, "PRIVMSG "):
			c.r.privmsgs.Add(1)
		}
	}
	return c.Conn.Write(p)
}

// newE2E starts ngIRCd, an observer in the channels, and the bridge with
// one route per channel: API chat "c1" ↔ "#c1" and so on. ircExtra is
// added to the irc connector's section.
func newE2E(t testing.TB, penalties bool, channels int, ircExtra string) *e2e {
	t.Helper()
	return newE2EOn(t, testservers.IRCServerKinds()[0], penalties, channels, ircExtra)
}

// newE2EOn is newE2E on a server of the given kind.
func newE2EOn(t testing.TB, kind testservers.IRCServerKind, penalties bool, channels int, ircExtra string) *e2e {
	t.Helper()
	r := &e2e{srv: kind.Start(t, penalties)}
	open := make(chan struct{})
	close(open)
	r.gate.Store(&open)
	var chans, apiChats []string
	var routes strings.Builder
	for i := 1; i <= channels; i++ {
		chans = append(chans, fmt.Sprintf("#c%d", i))
		apiChats = append(apiChats, fmt.Sprintf("c%d", i))
		fmt.Fprintf(&routes, "  - name: r%d\n    endpoints:\n      - {connector: api, chat: c%d}\n      - {connector: irc, chat: \"#c%d\"}\n", i, i, i)
	}
	routes.WriteString("  - name: queries\n    endpoints:\n      - {connector: api, chat: pms}\n      - {connector: irc, chat: watcher}\n")
	r.obs = dialObserver(t, r.srv.Addr(), "watcher", chans...)
	dir := t.TempDir()
	r.apiAddr = fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t))
	r.cfgPath = filepath.Join(dir, "phonebridge.yaml")
	cfg := fmt.Sprintf(`state_dir: ./state
delivery:
  retry_min: 20ms
  retry_max: 300ms
notices:
  connector: api
  chat: notices
connectors:
  api:
    type: api
    listen: %s
    token: %s
    # The benchmarks' client decodes every frame while sharing the CPU.
    client_buffer: 65536
  irc:
    type: irc
    server: %s
    tls: false
    nick: wabridge
%sroutes:
%s`, r.apiAddr, daemontest.Token, r.srv.Addr(), ircExtra, routes.String())
	if err := os.WriteFile(r.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r.start(t)
	r.api = dialAPI(t, r.apiAddr, append(apiChats, "pms", "notices")...)
	for _, ch := range chans {
		r.obs.expect(t, "the bridge join "+ch, func(m *ircmsg.Message) bool {
			return m.Command == "JOIN" && m.Nick() == "wabridge" && m.Param(0) == ch
		})
	}
	return r
}

func (r *e2e) start(t testing.TB) {
	t.Helper()
	b := daemontest.OpenBridge(t, r.cfgPath, "IRC_TEST_SHOW_LOGS")
	l, ok := b.ChatLister("irc")
	if !ok {
		t.Fatal("the irc connector lists no chats")
	}
	r.b, r.irc = b, l.(*Connector)
	r.irc.tune = func(c *ircconn.Config) {
		c.ReconnectMin, c.ReconnectMax = 50*time.Millisecond, 500*time.Millisecond
		puppet := strings.HasPrefix(c.RealName, "relayed by")
		c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if d := r.puppetDial.Load(); puppet && d != nil {
				return (*d)(ctx, network, addr)
			}
			select {
			case <-*r.gate.Load():
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			var d net.Dialer
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{conn, r}, nil
		}
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Stop(ctx); err != nil {
			t.Errorf("stop the bridge: %v", err)
		}
	})
}

// noFlood turns the bridge's flood control off, for tests about
// something else against a server without penalties.
const noFlood = "    flood:\n      rate: -1\n"

// TestEndToEnd runs on each IRC server kind: with echo-message and
// labeled-response (InspIRCd) the bridge must still relay each message
// once and never its own lines back.
func TestEndToEnd(t *testing.T) {
	for _, kind := range testservers.IRCServerKinds() {
		t.Run(kind.Name, func(t *testing.T) { endToEnd(t, kind) })
	}
}

func endToEnd(t *testing.T, kind testservers.IRCServerKind) {
	r := newE2EOn(t, kind, false, 1, noFlood)

	t.Run("API to IRC", func(t *testing.T) {
		r.api.send(t, apiEvent{ID: "m1", Chat: "c1", Text: "hello from WhatsApp", HTML: "hello from <b>WhatsApp</b>"})
		m := r.obs.expect(t, "the relayed message", fromBridge("#c1"))
		if got := m.Trailing(); got != "<A\u200dnn> hello from \x02WhatsApp\x02" {
			t.Errorf("IRC got %q", got)
		}
	})

	t.Run("IRC to API", func(t *testing.T) {
		r.obs.raw(t, "PRIVMSG #c1 :hi from \x02IRC\x02")
		ev := r.api.event(t, "c1")
		if ev.Text != "hi from IRC" || ev.HTML != "hi from <b>IRC</b>" || ev.Sender == nil || ev.Sender.Name != "watcher" || ev.Emote {
			t.Errorf("API got %+v", ev)
		}
	})

	t.Run("actions both ways", func(t *testing.T) {
		r.api.send(t, apiEvent{ID: "m2", Chat: "c1", Text: "waves", Emote: true})
		m := r.obs.expect(t, "the relayed action", fromBridge("#c1"))
		if got := m.Trailing(); got != "\x01ACTION A\u200dnn waves\x01" {
			t.Errorf("IRC got %q", got)
		}
		r.obs.raw(t, "PRIVMSG #c1 :\x01ACTION dances\x01")
		if ev := r.api.event(t, "c1"); ev.Text != "dances" || !ev.Emote {
			t.Errorf("API got %+v", ev)
		}
	})

	t.Run("long message split under 512 bytes", func(t *testing.T) {
		for len(r.obs.sizes) > 0 {
			<-r.obs.sizes
		}
		words := make([]string, 300)
		for i := range words {
			words[i] = fmt.Sprintf("w%03d", i)
		}
		text := strings.Join(words, " ")
		r.api.send(t, apiEvent{ID: "m3", Chat: "c1", Text: text})
		var got []string
		for len(strings.Join(got, " ")) < len(text) {
			m := r.obs.expect(t, "the next part", fromBridge("#c1"))
			got = append(got, strings.TrimPrefix(m.Trailing(), "<A\u200dnn> "))
			if size := <-r.obs.sizes; size > ircmsg.MaxLineLen {
				t.Errorf("a line of %d bytes", size)
			}
		}
		if len(got) < 3 || strings.Join(got, " ") != text {
			t.Errorf("%d lines adding up to %q", len(got), strings.Join(got, " "))
		}
	})

	t.Run("private messages", func(t *testing.T) {
		r.obs.raw(t, "PRIVMSG wabridge :just for you")
		if ev := r.api.event(t, "pms"); ev.Text != "just for you" || ev.Sender.Name != "watcher" {
			t.Errorf("API got %+v", ev)
		}
		r.api.send(t, apiEvent{ID: "m4", Chat: "pms", Text: "answer"})
		m := r.obs.expect(t, "the private answer", func(m *ircmsg.Message) bool {
			return m.Command == "PRIVMSG" && m.Nick() == "wabridge" && m.Param(0) == "watcher"
		})
		if m.Trailing() != "<A\u200dnn> answer" {
			t.Errorf("IRC got %q", m.Trailing())
		}
	})
}

// TestServerRestartMidStream kills ngIRCd while the API sends a stream of
// messages: each arrives on IRC, in order. The bridge redials only once
// the observer is back in the channel, so the observer can see all.
func TestServerRestartMidStream(t *testing.T) {
	for _, kind := range testservers.IRCServerKinds() {
		t.Run(kind.Name, func(t *testing.T) { serverRestartMidStream(t, kind) })
	}
}

func serverRestartMidStream(t *testing.T, kind testservers.IRCServerKind) {
	r := newE2EOn(t, kind, false, 1, noFlood)
	const n = 40
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		// The API acks once the core has the message, whatever IRC does.
		for i := 0; i < n; i++ {
			ev := apiEvent{ID: fmt.Sprintf("s%d", i), Kind: "message", Chat: "c1", Sender: &daemontest.WireSender{ID: "ann", Name: "Ann"}, Text: fmt.Sprintf("stream %d", i)}
			r.api.writeMu.Lock()
			err := r.api.ws.WriteJSON(map[string]any{"type": "send", "ref": ev.ID, "event": ev})
			r.api.writeMu.Unlock()
			if err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
			select {
			case f := <-r.api.other:
				if f.Type != "ack" {
					t.Errorf("send %d: %+v", i, f)
					return
				}
			case <-time.After(e2eWait):
				t.Errorf("send %d: no ack", i)
				return
			}
			time.Sleep(15 * time.Millisecond)
		}
	}()
	var got []string
	next := func() string {
		m := r.obs.expect(t, fmt.Sprintf("message %d", len(got)), fromBridge("#c1"))
		return strings.TrimPrefix(m.Trailing(), "<A\u200dnn> ")
	}
	for len(got) < n/4 {
		got = append(got, next())
	}
	hold := make(chan struct{})
	r.gate.Store(&hold)
	r.srv.Kill()
	// Lines the server relayed before it died may still be read.
	drain := time.After(200 * time.Millisecond)
drained:
	for {
		select {
		case m := <-r.obs.lines:
			if fromBridge("#c1")(m) {
				got = append(got, strings.TrimPrefix(m.Trailing(), "<A\u200dnn> "))
			}
		case <-drain:
			break drained
		}
	}
	r.srv.Restart(t)
	r.obs.connect(t)
	close(hold)
	for {
		want := fmt.Sprintf("stream %d", n-1)
		if len(got) > 0 && got[len(got)-1] == want {
			break
		}
		got = append(got, next())
	}
	// Each once and in order; a repeat is only possible for a line whose
	// confirmation the kill cut off.
	var uniq []string
	dups := 0
	for _, s := range got {
		if len(uniq) > 0 && uniq[len(uniq)-1] == s {
			dups++
			continue
		}
		uniq = append(uniq, s)
	}
	for i, s := range uniq {
		if s != fmt.Sprintf("stream %d", i) {
			t.Fatalf("message %d is %q; all: %q", i, s, got)
		}
	}
	if len(uniq) != n || dups > 1 {
		t.Errorf("%d distinct of %d, %d repeated: %q", len(uniq), n, dups, got)
	}
	t.Logf("%d messages across a server kill, %d repeated", n, dups)
	// The last ack may come after the last line: the sender must be done
	// before the test ends and its connection closes.
	select {
	case <-sent:
	case <-time.After(e2eWait):
		t.Error("the sender did not get its last ack")
	}
}

// TestFloodPacing runs ngIRCd with its flood penalties and sends bursts
// to several channels at once. ngIRCd 26 throttles a flooding client
// rather than disconnecting it, so what is checked is that the bridge
// paces itself (burst, then rate lines a second, however many chats
// send at once), stays connected, and delivers every line in order.
func TestFloodPacing(t *testing.T) {
	const chans, each, burst, rate = 3, 6, 5, 2.0
	r := newE2E(t, true, chans, fmt.Sprintf("    flood:\n      burst: %d\n      rate: %g\n", burst, rate))
	joins := 0
	for i := 0; i < each; i++ {
		for c := 1; c <= chans; c++ {
			r.api.sendAsync(t, apiEvent{ID: fmt.Sprintf("f%d-%d", c, i), Chat: fmt.Sprintf("c%d", c), Text: fmt.Sprintf("flood %d %d", c, i)})
		}
	}
	for i := 0; i < chans*each; i++ {
		if f := r.api.reply(t); f.Type != "ack" {
			t.Fatalf("send: %+v", f)
		}
	}
	next := map[string]int{}
	var start time.Time // the first line's arrival
	for total := 0; total < chans*each; total++ {
		m := r.obs.expect(t, "the next flood line", func(m *ircmsg.Message) bool {
			if m.Nick() == "wabridge" && (m.Command == "QUIT" || m.Command == "JOIN") {
				joins++ // a reconnection
			}
			return m.Command == "PRIVMSG" && m.Nick() == "wabridge"
		})
		if total == 0 {
			start = time.Now()
		}
		ch := m.Param(0)
		want := fmt.Sprintf("<A\u200dnn> flood %s %d", strings.TrimPrefix(ch, "#c"), next[ch])
		if m.Trailing() != want {
			t.Errorf("in %s got %q, want %q", ch, m.Trailing(), want)
		}
		next[ch]++
	}
	elapsed := time.Since(start)
	if joins > 0 {
		t.Errorf("the bridge reconnected %d times", joins)
	}
	if st := r.b.Status()["irc"]; st.State != bridge.StateConnected {
		t.Errorf("the connector is %s: %s", st.State, st.Detail)
	}
	// The bucket holds burst lines; the rest come at rate a second.
	if least := time.Duration(float64(chans*each-burst-1) / rate * float64(time.Second)); elapsed < least {
		t.Errorf("%d lines in %v: faster than the flood settings allow (%v)", chans*each, elapsed, least)
	}
	t.Logf("%d lines in %v under ngIRCd's penalties", chans*each, elapsed.Round(time.Millisecond))
}

// TestBarriersAreSharedUnderPenalties runs ngIRCd with its flood
// penalties, where every PING the bridge writes counts against what the
// server lets through. The lines of a message go out and are confirmed
// together (one barrier per flood.burst lines), so N lines take far fewer
// than N PING round trips: at most one per batch, however the chats
// interleave. Every line arrives, in order.
func TestBarriersAreSharedUnderPenalties(t *testing.T) {
	const chans, each, lines, burst = 2, 4, 5, 5
	r := newE2E(t, true, chans, fmt.Sprintf("    flood:\n      burst: %d\n      rate: 10\n", burst))
	for i := 0; i < each; i++ {
		for c := 1; c <= chans; c++ {
			var text []string
			for l := 0; l < lines; l++ {
				text = append(text, fmt.Sprintf("c%d m%d l%d", c, i, l))
			}
			r.api.sendAsync(t, apiEvent{ID: fmt.Sprintf("b%d-%d", c, i), Chat: fmt.Sprintf("c%d", c), Text: strings.Join(text, "\n")})
		}
	}
	// Then one line per chat: once it arrives, every Send before it on
	// its chat has returned, so every barrier it needed was written.
	for c := 1; c <= chans; c++ {
		r.api.sendAsync(t, apiEvent{ID: fmt.Sprintf("end%d", c), Chat: fmt.Sprintf("c%d", c), Text: "end"})
	}
	for i := 0; i < chans*(each+1); i++ {
		if f := r.api.reply(t); f.Type != "ack" {
			t.Fatalf("send: %+v", f)
		}
	}
	got := map[string][]string{}
	for ended := 0; ended < chans; {
		m := r.obs.expect(t, "the next line", func(m *ircmsg.Message) bool { return m.Command == "PRIVMSG" && m.Nick() == "wabridge" })
		body := strings.TrimPrefix(m.Trailing(), "<A\u200dnn> ")
		if body == "end" {
			ended++
			continue
		}
		got[m.Param(0)] = append(got[m.Param(0)], body)
	}
	for c := 1; c <= chans; c++ {
		var want []string
		for i := 0; i < each; i++ {
			for l := 0; l < lines; l++ {
				want = append(want, fmt.Sprintf("c%d m%d l%d", c, i, l))
			}
		}
		if ch := fmt.Sprintf("#c%d", c); !slices.Equal(got[ch], want) {
			t.Errorf("%s got %q, want %q", ch, got[ch], want)
		}
	}
	total := chans * (each*lines + 1)
	batches := chans * (each*((lines+burst-1)/burst) + 1)
	pings, privmsgs := r.pings.Load(), r.privmsgs.Load()
	if privmsgs != int64(total) {
		t.Errorf("the bridge wrote %d PRIVMSGs for %d lines", privmsgs, total)
	}
	if pings > int64(batches) {
		t.Errorf("%d PING barriers for %d lines in %d batches: more than one a batch", pings, total, batches)
	}
	t.Logf("%d lines confirmed by %d PINGs under ngIRCd's penalties", total, pings)
}

// TestPuppetsEndToEnd: in puppet mode two WhatsApp senders appear on IRC
// as two nicks, and what they say is not relayed back.
func TestPuppetsEndToEnd(t *testing.T) {
	r := newE2E(t, false, 1, noFlood+"    mode: puppet\n")
	r.api.send(t, apiEvent{ID: "p1", Chat: "c1", Text: "hello from Ann"})
	r.api.send(t, apiEvent{ID: "p2", Chat: "c1", Sender: &daemontest.WireSender{ID: "bob", Name: "Bob"}, Text: "and from Bob"})
	r.api.send(t, apiEvent{ID: "p3", Chat: "c1", Text: "waves", Emote: true})
	said := func(m *ircmsg.Message) bool { return m.Command == "PRIVMSG" && m.Param(0) == "#c1" }
	for _, want := range []struct{ nick, text string }{
		{"Ann[wa]", "hello from Ann"},
		{"Bob[wa]", "and from Bob"},
		{"Ann[wa]", "\x01ACTION waves\x01"},
	} {
		m := r.obs.expect(t, want.nick+" saying "+want.text, said)
		if m.Nick() != want.nick || m.Trailing() != want.text {
			t.Errorf("IRC got %s: %q, want %s: %q", m.Nick(), m.Trailing(), want.nick, want.text)
		}
	}
	// The bot still relays IRC, and nothing the puppets said comes back.
	r.obs.raw(t, "PRIVMSG #c1 :hello puppets")
	if ev := r.api.event(t, "c1"); ev.Text != "hello puppets" || ev.Sender.Name != "watcher" {
		t.Errorf("API got %+v from %+v, want the watcher's line first", ev, ev.Sender)
	}
}

// refuser is a network that refuses every connection as ngIRCd does past
// MaxConnectionsIP, counting them.
type refuser struct {
	ln    net.Listener
	count atomic.Int64
}

func newRefuser(t testing.TB) *refuser {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	rf := &refuser{ln: ln}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			rf.count.Add(1)
			fmt.Fprintf(conn, "ERROR :Connection refused, too many connections from your IP address\r\n")
			conn.Close()
		}
	}()
	return rf
}

func (rf *refuser) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, rf.ln.Addr().String())
}

// eventually waits for cond, polling: what it watches sends no signal.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(e2eWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRefusedPuppetsNeverStallAChat: when the network refuses puppet
// connections, the first sender's message does not wait for a puppet that
// will not come, new senders are spoken for by the bot at once without a
// dial each, and puppets try again only after a backoff that doubles per
// refusal, one at a time; once one gets in, senders speak as themselves
// again.
func TestRefusedPuppetsNeverStallAChat(t *testing.T) {
	r := newE2E(t, false, 1, noFlood+"    mode: puppet\n")
	rf := newRefuser(t)
	dial := rf.dial
	r.puppetDial.Store(&dial)
	pups := &r.irc.pups
	pups.mu.Lock()
	pups.retryMin, pups.retryMax = time.Hour, 4*time.Hour
	pups.mu.Unlock()
	backoffPassed := func() {
		pups.mu.Lock()
		pups.retryAt = time.Time{}
		pups.mu.Unlock()
	}
	refusals := func() int {
		pups.mu.Lock()
		defer pups.mu.Unlock()
		return pups.refusals
	}
	n := 0
	say := func(sender, text, wantNick string) {
		t.Helper()
		n++
		r.api.send(t, apiEvent{ID: fmt.Sprintf("r%d", n), Chat: "c1", Sender: &daemontest.WireSender{ID: strings.ToLower(sender), Name: sender}, Text: text})
		m := r.obs.expect(t, sender+"'s "+text, func(m *ircmsg.Message) bool { return m.Command == "PRIVMSG" && m.Param(0) == "#c1" })
		if m.Nick() != wantNick || !strings.HasSuffix(m.Trailing(), text) {
			t.Errorf("%s's %q came as %s: %q, want from %s", sender, text, m.Nick(), m.Trailing(), wantNick)
		}
	}

	start := time.Now()
	say("Ann", "first", "wabridge")
	if took := time.Since(start); took > puppetJoinWait/3 {
		t.Errorf("the first message took %v: it waited for the refused puppet", took)
	}
	for _, who := range []string{"Bob", "Cid", "Dee"} {
		say(who, "hello", "wabridge")
	}
	if got := rf.count.Load(); got != 1 {
		t.Errorf("%d puppet connections while the network refuses, want 1", got)
	}

	// The backoff passes: one puppet tries again, the bot speaking for
	// its message meanwhile; refused, it doubles the wait.
	backoffPassed()
	say("Eve", "probe", "wabridge")
	say("Fay", "while Eve's puppet tries", "wabridge")
	eventually(t, "the second refusal", func() bool { return refusals() == 2 })
	pups.mu.Lock()
	wait := time.Until(pups.retryAt)
	pups.mu.Unlock()
	if wait < 2*time.Hour-time.Minute {
		t.Errorf("after two refusals in a row puppets wait %v, want twice the first wait (2h)", wait)
	}
	say("Gus", "hello", "wabridge")
	if got := rf.count.Load(); got != 2 {
		t.Errorf("%d puppet connections after one retry, want 2", got)
	}

	// The network lets puppets in again: the next try gets through, and
	// its sender then speaks as himself, as do new senders.
	r.puppetDial.Store(nil)
	backoffPassed()
	say("Hal", "probe", "wabridge")
	eventually(t, "the puppet to get in", func() bool { return refusals() == 0 })
	say("Hal", "as himself", "Hal[wa]")
	say("Ida", "as herself", "Ida[wa]")
	if got := rf.count.Load(); got != 2 {
		t.Errorf("the refusing network saw %d connections, want 2", got)
	}
}
