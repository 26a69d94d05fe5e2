package bench

import (
	"context"
	"fmt"
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
	irc   *daemontest.IRCPerson
	mx    *mautrix.Client
	room  id.RoomID
	mxMsg chan string // bodies of the bot's messages in the room
}

func newServersRig(b *testing.B) *serversRig {
	b.Helper()
	bin := daemontest.Binary(b)
	ngircd := testservers.StartNgircd(b, testservers.NgircdOptions{})
	hs := testservers.StartDendrite(b, testservers.DendriteOptions{})
	mr := daemontest.NewMatrixRoom(b, hs)
	r := &serversRig{mx: mr.Ann, room: mr.Room, mxMsg: make(chan string, 1<<16)}
	r.irc = daemontest.DialIRC(b, ngircd.Addr(), "watcher", "#general")

	dir := b.TempDir()
	pair := daemontest.WriteAPIPair(b, dir, 1, "")
	cfg, _ := os.ReadFile(pair.Path)
	conns := fmt.Sprintf("  irc:\n    type: irc\n    server: %s\n    tls: false\n    nick: wabridge\n    flood: {burst: 5, rate: -1}\n", ngircd.Addr()) +
		mr.BotConnector("mx", hs) + "    sync_timeout: 5s\nroutes:\n"
	text := strings.Replace(string(cfg), "routes:\n", conns, 1) +
		"  - name: three-ways\n    endpoints:\n      - {connector: in, chat: general}\n      - {connector: irc, chat: \"#general\"}\n" +
		"      - {connector: mx, chat: \"" + string(mr.Room) + "\"}\n"
	if err := os.WriteFile(pair.Path, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
	r.d = daemontest.Start(b, bin, "run", "-c", pair.Path)
	r.api = senderOnly(b, r.d, pair)
	r.irc.Await(b, func(line string) bool {
		return strings.HasPrefix(line, ":wabridge!") && strings.Contains(line, " JOIN ")
	})
	r.syncMatrix(b, mr.BotID)
	// The bot joins the room the route names; messages before that would
	// be refused.
	deadline := time.Now().Add(time.Minute)
	for {
		members, err := r.mx.JoinedMembers(context.Background(), r.room)
		if err == nil && hasMember(members, mr.BotID) {
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
	r.irc.Await(b, func(line string) bool { return strings.Contains(line, "warm-up") })
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
	onlyByName(b, "ThroughServers", "go test -run '^$' -bench ThroughServers -benchtime 200x -timeout 30m ./bench/")
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
			r.irc.Await(b, func(line string) bool { return strings.Contains(line, "PRIVMSG #general") })
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
			r.irc.Await(b, func(line string) bool { return strings.Contains(line, "from matrix") })
		}
		report(b, b.N, time.Since(start), cpu)
	})
	b.Run("latency", func(b *testing.B) {
		var toIRC, toMatrix, fromMatrix []time.Duration
		for i := 0; i < b.N; i++ {
			start := time.Now()
			r.api.send(b, sent, fmt.Sprintf("one %d", sent))
			sent++
			r.irc.Await(b, func(line string) bool { return strings.Contains(line, "one ") })
			toIRC = append(toIRC, time.Since(start))
			r.awaitMatrix(b, 1)
			toMatrix = append(toMatrix, time.Since(start))
			r.api.ack(b)
			start = time.Now()
			if _, err := r.mx.SendText(context.Background(), r.room, "back"); err != nil {
				b.Fatal(err)
			}
			r.irc.Await(b, func(line string) bool { return strings.Contains(line, "back") })
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

func hasMember(m *mautrix.RespJoinedMembers, u id.UserID) bool {
	_, ok := m.Joined[u]
	return ok
}
