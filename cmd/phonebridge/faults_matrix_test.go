package main

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
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

// matrixRoom is a Matrix room on Dendrite in a fault rig's fan-out: the
// bridge relays in/general into it in bot mode, and Ann reads it.
type matrixRoom struct {
	hs   *testservers.Dendrite
	ann  *mautrix.Client
	room id.RoomID
	bot  id.UserID
	// diagnose, if set, adds to awaitLogging's failure what the daemon
	// says of itself (its outbox, say).
	diagnose func() string
}

// addMatrix starts Dendrite and adds a bot-mode matrix connector to the
// rig's config, fed by in/general.
func (r *faultRig) addMatrix(t *testing.T) *matrixRoom {
	t.Helper()
	hs := testservers.StartDendrite(t, testservers.DendriteOptions{})
	mr := daemontest.NewMatrixRoom(t, hs)
	cfg, err := os.ReadFile(r.pair.Path)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(cfg), "routes:\n", mr.BotConnector("mx", hs)+"routes:\n", 1) +
		"  - name: matrix\n    endpoints:\n      - {connector: in, chat: general, direction: in}\n      - {connector: mx, chat: \"" + string(mr.Room) + "\"}\n"
	if err := os.WriteFile(r.pair.Path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return &matrixRoom{hs: hs, ann: mr.Ann, room: mr.Room, bot: mr.BotID}
}

// relayed returns the message tokens the bot said in the room, oldest
// first, from the room's history (not a /sync, which a kill may cut).
func (m *matrixRoom) relayed(ctx context.Context) ([]string, error) {
	var out []string
	from := ""
	filter := &mautrix.FilterPart{Senders: []id.UserID{m.bot}}
	for {
		resp, err := m.ann.Messages(ctx, m.room, from, "", mautrix.DirectionBackward, filter, 500)
		if err != nil {
			return nil, err
		}
		for _, evt := range resp.Chunk {
			if evt.Sender != m.bot || evt.Type != event.EventMessage {
				continue
			}
			body, _ := evt.Content.Raw["body"].(string)
			if tok := msgToken.FindString(body); tok != "" {
				out = append(out, tok)
			}
		}
		if len(resp.Chunk) == 0 || resp.End == "" || resp.End == from {
			break
		}
		from = resp.End
	}
	slices.Reverse(out)
	return out, nil
}

// await waits until the room holds at least n relayed messages and
// returns them.
func (m *matrixRoom) await(t *testing.T, n int, limit time.Duration) []string {
	t.Helper()
	return m.awaitLogging(t, n, limit, nil)
}

// awaitLogging is await that, if it fails, shows the daemon's log and
// the tail of Dendrite's.
func (m *matrixRoom) awaitLogging(t *testing.T, n int, limit time.Duration, d *daemontest.Daemon) []string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		got, err := m.relayed(t.Context())
		if err == nil && len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			var logs string
			if d != nil {
				hsLog, _ := os.ReadFile(filepath.Join(m.hs.Dir(), "dendrite.log"))
				var trouble []string
				for _, l := range strings.Split(string(hsLog), "\n") {
					if strings.Contains(l, "level=warn") || strings.Contains(l, "level=error") || strings.Contains(l, "level=fatal") || strings.Contains(l, "level=panic") {
						trouble = append(trouble, l)
					}
				}
				logs = "\ndaemon:\n" + d.Logs() + "\ndendrite's warnings and errors:\n" + strings.Join(trouble[max(0, len(trouble)-60):], "\n")
				if m.diagnose != nil {
					logs += "\n" + m.diagnose()
				}
			}
			t.Fatalf("the Matrix room holds %d of %d messages after %v (%v)%s", len(got), n, limit, err, logs)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestHomeserverRestartedMidStream: Dendrite is stopped three times while
// the real daemon streams to its room (SIGTERM, as for an upgrade; its
// in-flight requests are cut), stays down while more messages come in,
// then starts again. IRC, fed by the same route, keeps getting every
// message while the homeserver is down; the room then gets every message
// exactly once, in order — a send cut off unanswered is retried flagged
// MaybeSent and looked for rather than sent twice. The bot's /sync
// resumes too: what Ann writes after the last restart is relayed.
//
// Not SIGKILL: Dendrite 0.13.8's embedded NATS can lose its output stream
// on a SIGKILL ("consumer ... ack floor 101 is ahead of stream's last
// sequence 0" in its log), and its sync API then skips the next ~100
// events of the room although the roomserver took them and answered 200.
// Seen here 3 runs in about 90, with the bridge's outbox empty: every event
// delivered and acknowledged. That is Dendrite's loss, which no client can
// see past, so a test of the bridge through /messages cannot use it.
func TestHomeserverRestartedMidStream(t *testing.T) {
	const cycles, batch = 3, 40
	const total = cycles*batch + batch/2
	r := newFaultRig(t, "")
	mx := r.addMatrix(t)
	// Ann's messages go to out/fromroom, so the test sees the sync resume.
	cfg, err := os.ReadFile(r.pair.Path)
	if err != nil {
		t.Fatal(err)
	}
	withOut := strings.Replace(string(cfg), "      - {connector: mx, chat:", "      - {connector: out, chat: fromroom, direction: out}\n      - {connector: mx, chat:", 1)
	if err := os.WriteFile(r.pair.Path, []byte(withOut), 0o600); err != nil {
		t.Fatal(err)
	}
	d := r.start(t)
	mx.diagnose = func() string {
		out, errOut, _ := daemontest.RunCommand(t, r.bin, "status", "-c", r.pair.Path)
		return "phonebridge status:\n" + out + errOut
	}
	fromRoom := dialSubscribed(t, r.pair.OutAddr, "fromroom", -1)
	snd := dialSubscribed(t, r.pair.InAddr, "", 0)

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 3))
	t.Logf("seed %d", seed)
	var restarted time.Time
	for c := range cycles {
		first := c * batch
		// Half a batch is committed at once, faster than one room takes
		// it, so the kill lands while sends are in flight.
		sendAll(t, snd, first, first+batch/2)
		mx.awaitLogging(t, first+1+rng.IntN(batch/4), 3*time.Minute, d)
		mx.hs.Stop()
		sendAll(t, snd, first+batch/2, first+batch)
		// IRC is held up by nothing: everything so far reaches it while
		// the homeserver is dead.
		r.watch.awaitAll(t, first+batch, 30*time.Second, d)
		mx.hs.Restart(t)
		restarted = time.Now()
	}
	sendAll(t, snd, cycles*batch, total)

	inRoom := mx.awaitLogging(t, total, 3*time.Minute, d)
	exactlyInOrder(t, "the Matrix room", inRoom, total)
	caughtUp := time.Since(restarted)
	r.watch.awaitAll(t, total, 30*time.Second, d)
	// How many kills cut a send off mid-request, rather than between
	// sends: a reset or EOF on a send, not a refused dial.
	cutMidSend := 0
	for _, l := range strings.Split(d.Logs(), "\n") {
		if strings.Contains(l, "delivery delayed") && strings.Contains(l, "destination=mx/") && !strings.Contains(l, "connection refused") {
			cutMidSend++
		}
	}

	if _, err := mx.ann.SendText(t.Context(), mx.room, "ann after the restart"); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(60 * time.Second)
	for {
		select {
		case f := <-fromRoom.Events:
			if f.Event.Text != "ann after the restart" {
				continue
			}
			t.Logf("%d messages across %d homeserver restarts (%d cut a send mid-request); the room caught up %v after the last restart",
				total, cycles, cutMidSend, caughtUp.Round(time.Millisecond))
			d.Stop(5 * time.Second)
			return
		case <-deadline:
			t.Fatalf("Ann's message after the restart was not relayed in 60s\n%s", d.Logs())
		}
	}
}
