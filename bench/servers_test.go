package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/testservers"
)

// serversRig is the real daemon relaying one chat three ways: API chat
// "general" ↔ IRC #general on ngIRCd ↔ a Matrix room on Dendrite (bot
// mode), with a person on IRC and one on Matrix.
type serversRig struct {
	d     *daemontest.Daemon
	api   *rig // only its sender is used
	irc   *ircPerson
	mx    *mautrix.Client
	room  id.RoomID
	mxMsg chan string // bodies of the bot's messages in the room
}

func newServersRig(b *testing.B) *serversRig {
	b.Helper()
	bin := daemontest.Binary(b)
	ngircd := testservers.StartNgircd(b, testservers.NgircdOptions{})
	hs := testservers.StartDendrite(b, testservers.DendriteOptions{})
	annID, annToken := hs.Register(b, "ann", "ann-password-1", false)
	botID, botToken := hs.Register(b, "bridge", "bridge-password-1", false)
	ann, err := mautrix.NewClient(hs.URL(), id.UserID(annID), annToken)
	if err != nil {
		b.Fatal(err)
	}
	created, err := ann.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "General"})
	if err != nil {
		b.Fatal(err)
	}
	r := &serversRig{mx: ann, room: created.RoomID, mxMsg: make(chan string, 1<<16)}
	r.irc = dialPerson(b, ngircd.Addr(), "watcher", "#general")

	dir := b.TempDir()
	pair := daemontest.WriteAPIPair(b, dir, 1, "")
	cfg, _ := os.ReadFile(pair.Path)
	conns := fmt.Sprintf(`  irc:
    type: irc
    server: %s
    tls: false
    nick: wabridge
    flood: {burst: 5, rate: -1}
  mx:
    type: matrix
    mode: bot
    homeserver: %s
    domain: localhost
    user_id: "%s"
    access_token: %s
    sync_timeout: 5s
routes:
`, ngircd.Addr(), hs.URL(), botID, botToken)
	text := strings.Replace(string(cfg), "routes:\n", conns, 1) +
		"  - name: three-ways\n    endpoints:\n      - {connector: in, chat: general}\n      - {connector: irc, chat: \"#general\"}\n" +
		"      - {connector: mx, chat: \"" + string(created.RoomID) + "\"}\n"
	if err := os.WriteFile(pair.Path, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
	r.d = daemontest.Start(b, bin, "run", "-c", pair.Path)
	r.api = senderOnly(b, r.d, pair)
	r.irc.await(b, func(line string) bool {
		return strings.HasPrefix(line, ":wabridge!") && strings.Contains(line, " JOIN ")
	})
	r.syncMatrix(b, id.UserID(botID))
	// The bot joins the room the route names; messages before that would
	// be refused.
	deadline := time.Now().Add(time.Minute)
	for {
		members, err := ann.JoinedMembers(context.Background(), r.room)
		if err == nil && hasMember(members, id.UserID(botID)) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the bridge's Matrix account did not join the room within a minute\n%s", r.d.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A first message all the way through.
	r.api.send(b, 0, "warm-up")
	r.api.ack(b)
	r.irc.await(b, func(line string) bool { return strings.Contains(line, "warm-up") })
	r.awaitMatrix(b, 1)
	return r
}

// senderOnly is an API sender on the daemon's "in" connector.
func senderOnly(b *testing.B, d *daemontest.Daemon, pair daemontest.APIPair) *rig {
	b.Helper()
	snd, err := daemontest.DialRaw(pair.InAddr, daemontest.Token)
	if err != nil {
		b.Fatal(err)
	}
	r := &rig{d: d, snd: snd, chats: pair.Chats, acks: make(chan struct{}, 1<<16), cfg: pair.Path}
	go func() {
		for {
			_, m, err := snd.ReadMessage()
			if err != nil {
				close(r.acks)
				return
			}
			if strings.HasPrefix(string(m), `{"type":"ack"`) {
				r.acks <- struct{}{}
			}
		}
	}()
	b.Cleanup(func() { snd.Close() })
	return r
}

// syncMatrix follows the room as Ann and queues the bot's message bodies.
func (r *serversRig) syncMatrix(b *testing.B, bot id.UserID) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.Cleanup(func() { cancel(); <-done })
	resp, err := r.mx.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 0})
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		defer close(done)
		since := resp.NextBatch
		for ctx.Err() == nil {
			resp, err := r.mx.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 5000, Since: since})
			if err != nil {
				continue
			}
			since = resp.NextBatch
			jr := resp.Rooms.Join[r.room]
			if jr == nil {
				continue
			}
			for _, evt := range jr.Timeline.Events {
				if evt.Sender == bot && evt.Type == event.EventMessage {
					body, _ := evt.Content.Raw["body"].(string)
					r.mxMsg <- body
				}
			}
		}
	}()
}

// awaitMatrix waits for n more of the bot's messages in the room.
func (r *serversRig) awaitMatrix(b *testing.B, n int) {
	timeout := time.After(5 * time.Minute)
	for range n {
		select {
		case <-r.mxMsg:
		case <-timeout:
			b.Fatalf("the Matrix room did not get %d messages within 5 minutes", n)
		}
	}
}

// BenchmarkThroughServers: messages through the real daemon to and from
// ngIRCd and Dendrite, with the daemon's CPU and RSS per 1,000 messages.
// Dendrite takes one room's messages one at a time (about 60 a second
// here, see ../shared/TESTSERVERS.md), so b.N should stay small:
//
//	go test -run '^$' -bench ThroughServers -benchtime 500x ./bench/
func BenchmarkThroughServers(b *testing.B) {
	r := newServersRig(b)
	pid := r.d.Pid()
	report := func(b *testing.B, n int, took time.Duration, cpuBefore time.Duration) {
		b.ReportMetric(float64(n)/took.Seconds(), "msgs/s")
		b.ReportMetric((cpuTime(b, pid)-cpuBefore).Seconds()*1000/float64(n)*1000, "cpu-ms/1k-msgs")
		b.ReportMetric(rssNow(b, pid), "rss-MB")
	}
	sent := 1 // the warm-up
	b.Run("api-to-irc+matrix", func(b *testing.B) {
		cpu := cpuTime(b, pid)
		start := time.Now()
		for i := 0; i < b.N; i++ {
			r.api.send(b, sent, fmt.Sprintf("through %d", sent))
			sent++
		}
		for range b.N {
			r.api.ack(b)
		}
		for range b.N {
			r.irc.await(b, func(line string) bool { return strings.Contains(line, "PRIVMSG #general") })
		}
		r.awaitMatrix(b, b.N)
		report(b, b.N, time.Since(start), cpu)
	})
	b.Run("matrix-to-irc", func(b *testing.B) {
		cpu := cpuTime(b, pid)
		start := time.Now()
		for i := 0; i < b.N; i++ {
			if _, err := r.mx.SendText(context.Background(), r.room, fmt.Sprintf("from matrix %d", i)); err != nil {
				b.Fatal(err)
			}
		}
		for range b.N {
			r.irc.await(b, func(line string) bool { return strings.Contains(line, "from matrix") })
		}
		report(b, b.N, time.Since(start), cpu)
	})
	b.Run("latency", func(b *testing.B) {
		var toIRC, toMatrix, fromMatrix []time.Duration
		for i := 0; i < b.N; i++ {
			start := time.Now()
			r.api.send(b, sent, fmt.Sprintf("one %d", sent))
			sent++
			r.irc.await(b, func(line string) bool { return strings.Contains(line, "one ") })
			toIRC = append(toIRC, time.Since(start))
			r.awaitMatrix(b, 1)
			toMatrix = append(toMatrix, time.Since(start))
			r.api.ack(b)
			start = time.Now()
			if _, err := r.mx.SendText(context.Background(), r.room, "back"); err != nil {
				b.Fatal(err)
			}
			r.irc.await(b, func(line string) bool { return strings.Contains(line, "back") })
			fromMatrix = append(fromMatrix, time.Since(start))
		}
		for _, m := range []struct {
			name string
			d    []time.Duration
		}{{"api-irc", toIRC}, {"api-matrix", toMatrix}, {"matrix-irc", fromMatrix}} {
			slices.Sort(m.d)
			b.ReportMetric(float64(m.d[len(m.d)/2].Microseconds())/1000, m.name+"-p50-ms")
			b.ReportMetric(float64(m.d[len(m.d)*99/100].Microseconds())/1000, m.name+"-p99-ms")
		}
	})
}

// ircPerson is someone in an IRC channel: a raw connection.
type ircPerson struct {
	lines chan string
}

func dialPerson(b *testing.B, addr, nick, channel string) *ircPerson {
	b.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	p := &ircPerson{lines: make(chan string, 1<<16)}
	go func() {
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "PING ") {
				fmt.Fprintf(conn, "PONG %s\r\n", strings.TrimPrefix(line, "PING "))
				continue
			}
			p.lines <- line
		}
		close(p.lines)
	}()
	fmt.Fprintf(conn, "NICK %s\r\nUSER %s 0 * :%s\r\n", nick, nick, nick)
	p.await(b, func(line string) bool { return strings.Contains(line, " 001 ") })
	fmt.Fprintf(conn, "JOIN %s\r\n", channel)
	p.await(b, func(line string) bool { return strings.Contains(line, " JOIN ") })
	return p
}

func (p *ircPerson) await(b *testing.B, match func(string) bool) {
	b.Helper()
	timeout := time.After(5 * time.Minute)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				b.Fatal("the IRC connection closed")
			}
			if match(line) {
				return
			}
		case <-timeout:
			b.Fatal("no such IRC line within 5 minutes")
		}
	}
}

func hasMember(m *mautrix.RespJoinedMembers, u id.UserID) bool {
	_, ok := m.Joined[u]
	return ok
}
