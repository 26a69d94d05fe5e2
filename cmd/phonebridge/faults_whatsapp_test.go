package main

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/types"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// killChat is one WhatsApp chat of the kill test: who writes in it, and
// the IRC channel it is routed to.
type killChat struct {
	name    string    // the portal's name
	jid     types.JID // the chat, as the bridge names it
	to      types.JID // where its writer sends: Ann, or the group
	from    *fakewa.Phone
	channel string
}

// killToken is the chat and sequence number each message carries.
var killToken = regexp.MustCompile(`k(\d+)-m-(\d{5})`)

func killText(chat, i int) string { return fmt.Sprintf("k%d-m-%05d", chat, i) }

// TestWhatsAppKilledLosesNothing: WhatsApp as the origin. Fake phones
// write 1,000 messages in 10 chats (8 one-to-one, 2 groups) through the
// real whatsmeow client in the daemon while the daemon is SIGKILLed 5
// times, each time with a message on the wire that it has not
// acknowledged: WhatsApp keeps what it did not see acknowledged and sends
// it again at the next login, so every message reaches Matrix (a portal
// per chat) exactly once and IRC at least once, in order per chat. What
// the daemon had decrypted but not committed when it died comes again:
// whatsmeow's decrypted-event buffer gives its plaintext back (the Signal
// ratchet has moved on), and the core's record of origin ids relays it
// once.
func TestWhatsAppKilledLosesNothing(t *testing.T) {
	const perChat, kills = 100, 5
	w := newE2EWorld(t)
	ctx := t.Context()
	// Eight people write to Ann, and two groups: Family and Club.
	var chats []killChat
	for k, p := range []*fakewa.Phone{w.bob, w.eve} {
		chats = append(chats, killChat{name: p.PushName, jid: p.PN, to: w.ann.PN, from: p, channel: fmt.Sprintf("#k%d", k)})
	}
	for k := 2; k < 8; k++ {
		p := w.srv.NewPhone(fmt.Sprintf("1555000%04d", 7000+k), fmt.Sprintf("1000000000%05d", 70000+k), fmt.Sprintf("Kay%d", k))
		if err := w.ann.SetContact(ctx, p.PN, p.PushName, p.PushName); err != nil {
			t.Fatal(err)
		}
		chats = append(chats, killChat{name: p.PushName, jid: p.PN, to: w.ann.PN, from: p, channel: fmt.Sprintf("#k%d", k)})
	}
	club := w.srv.NewGroup("120363000000000002", "Club", w.ann, w.bob, chats[2].from)
	chats = append(chats,
		killChat{name: "Family", jid: w.family.JID, to: w.family.JID, from: w.eve, channel: "#k8"},
		killChat{name: "Club", jid: club.JID, to: club.JID, from: chats[2].from, channel: "#k9"})
	var channels []string
	routes := ""
	for _, c := range chats {
		channels = append(channels, c.channel)
		routes += fmt.Sprintf("  - name: irc-%s\n    endpoints:\n      - {connector: wa, chat: \"%s\"}\n      - {connector: irc, chat: \"%s\"}\n", c.channel[1:], c.jid, c.channel)
	}
	w.writeKillConfig(t, routes)
	irc := watchChannels(t, w.ircd.Addr(), "killwatch", channels...)

	w.d = daemontest.StartEnv(t, w.env, w.bin, "run", "-c", w.cfg)
	var killedLogs []string
	t.Cleanup(func() {
		if t.Failed() {
			for i, l := range killedLogs {
				t.Logf("killed daemon %d's warnings and portals:\n%s\n%s", i+1, warnings(l), linesWith(l, "portal"))
			}
			t.Logf("the last daemon's log:\n%s", w.d.Logs())
		}
	})
	w.link(t)
	w.waitFor(t, "the link to be connected", func() bool { return strings.Contains(w.links(t), "connected") })
	device := w.ann.Companions()[0]

	// The first message of each chat makes its portal; Ann joins them all.
	var idsMu sync.Mutex
	ids := map[string]string{} // token → WhatsApp message id, for failures
	send := func(k, i int) {
		msgID, err := chats[k].from.SendText(ctx, chats[k].to, killText(k, i))
		if err != nil {
			t.Errorf("%s cannot send: %v", chats[k].from.PushName, err)
			return
		}
		idsMu.Lock()
		ids[killText(k, i)] = msgID
		idsMu.Unlock()
	}
	rooms := map[int]id.RoomID{}
	for k := range chats {
		send(k, 0)
	}
	for k, c := range chats {
		rooms[k] = w.owner.AcceptInvite(t, c.name, e2eWait)
	}

	// The rest at about 50 messages a second across the chats, with
	// SIGKILLs spread along the stream, each while the device holds a
	// message it has not acknowledged.
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 13))
	total := perChat * len(chats)
	var killAt []int
	span := total / (kills + 1)
	for j := range kills {
		killAt = append(killAt, span*(j+1)+rng.IntN(span/2)-span/4)
	}
	t.Logf("seed %d: SIGKILL after %v messages sent", seed, killAt)
	var mu sync.Mutex
	sent := len(chats)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i < perChat; i++ {
			for k := range chats {
				send(k, i)
				mu.Lock()
				sent++
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	for j, at := range killAt {
		for {
			mu.Lock()
			n := sent
			mu.Unlock()
			if n >= at {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		// Kill with something on the wire the daemon has not acknowledged:
		// decrypted and not yet committed, or not yet decrypted.
		deadline := time.Now().Add(10 * time.Second)
		for w.srv.InFlight(device) == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		inFlight := w.srv.InFlight(device)
		w.d.Kill()
		killedLogs = append(killedLogs, w.d.Logs())
		t.Logf("kill %d: SIGKILL with %d messages sent, %d unacknowledged on the wire", j+1, at, inFlight)
		w.d = daemontest.StartEnv(t, w.env, w.bin, "run", "-c", w.cfg)
	}
	<-done

	// Everything arrives: each portal holds its chat's messages exactly
	// once in order; IRC has each at least once, first arrivals in order.
	for k := range chats {
		got := w.awaitPortal(t, rooms[k], k, perChat, func(got []string) string {
			var missing []string
			for i := range perChat {
				if tok := killText(k, i); !slices.Contains(got, tok) {
					idsMu.Lock()
					missing = append(missing, tok+" ("+ids[tok]+")")
					idsMu.Unlock()
				}
			}
			st := w.status(t)
			api := dialWAAPI(t, w.apiAddr, chats[k].jid.String())
			time.Sleep(2 * time.Second) // diagnosis only: let the API replay its log
			onAPI := api.count(chats[k].jid.String(), func(ev *daemontest.WireEvent) bool { return ev.Text == killText(k, 0) })
			copies := w.copiesOf(t, ids[killText(k, 0)])
			for _, c := range copies {
				if strings.HasPrefix(c, "mx/") {
					ev := c[strings.LastIndex(c, "/")+1 : strings.Index(c, "(")]
					copies = append(copies, w.whereIs(t, rooms[k], id.EventID(ev)))
				}
			}
			return fmt.Sprintf("missing %v; WhatsApp still queues %d for the device; the API has message 0 %d times; failed deliveries %d, outbox %+v; message 0's copies %v",
				missing, w.srv.Pending(device), onAPI, st.Failed, st.Outbox, copies)
		})
		for i, tok := range got {
			if tok != killText(k, i) {
				t.Fatalf("portal %s: position %d holds %s, want %s (each message once, in order): %v", chats[k].name, i, tok, killText(k, i), got)
			}
		}
		if len(got) != perChat {
			t.Fatalf("portal %s holds %d messages, want %d: %v", chats[k].name, len(got), perChat, got)
		}
		if paged, err := w.messagesTokens(t, rooms[k], k); err == nil && len(paged) != len(got) {
			t.Logf("portal %s: Dendrite's /messages shows %d of the %d messages its /sync shows", chats[k].name, len(paged), len(got))
		}
	}
	for k, c := range chats {
		first := firstArrivals(irc.tokensIn(c.channel))
		deadline := time.Now().Add(e2eWait)
		for len(first) < perChat && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			first = firstArrivals(irc.tokensIn(c.channel))
		}
		for i, tok := range first {
			if i >= perChat || tok != killText(k, i) {
				t.Fatalf("%s: message %d to arrive was %s, want %s (in order, none unknown): %v", c.channel, i, tok, killText(k, i), first)
			}
		}
		if len(first) != perChat {
			t.Fatalf("%s got %d of %d messages\n%s", c.channel, len(first), perChat, w.d.Logs())
		}
	}
	if n := w.srv.Redelivered(); n == 0 {
		t.Errorf("WhatsApp sent nothing again after %d kills with messages unacknowledged: the test did not test redelivery", kills)
	} else {
		t.Logf("WhatsApp sent %d messages again after the kills; each was relayed once", n)
	}
	w.srv.Quiesce(2 * time.Second)
	w.d.Stop(5 * time.Second)
}

// writeKillConfig is writeConfig's daemon with routes instead of the IRC
// ones: every chat to its portal, and the given routes.
func (w *e2eWorld) writeKillConfig(t *testing.T, routes string) {
	t.Helper()
	w.writeConfig(t, w.hs.URL())
	cfg, err := os.ReadFile(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	text := string(cfg)
	text = text[:strings.Index(text, "  - name: bob-irc\n")] + routes
	if err := os.WriteFile(w.cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// awaitPortal waits until room holds n of chat k's messages from ghosts
// and returns the tokens, oldest first, read from the room's history;
// explain says what is missing when it gives up.
func (w *e2eWorld) awaitPortal(t *testing.T, room id.RoomID, k, n int, explain func([]string) string) []string {
	t.Helper()
	// Dendrite takes a room's events one at a time: wait while they come.
	const stall = time.Minute
	deadline, have := time.Now().Add(stall), -1
	for {
		got, err := w.portalTokens(t, room, k)
		if err == nil && len(got) >= n {
			return got
		}
		if len(got) > have {
			have, deadline = len(got), time.Now().Add(stall)
		}
		if time.Now().After(deadline) {
			t.Fatalf("portal %s holds %d of %d messages, none more in %v (%v): %s", room, len(got), n, stall, err, explain(got))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// portalTokens is chat k's tokens in room's whole timeline (portalEvents).
func (w *e2eWorld) portalTokens(t *testing.T, room id.RoomID, k int) ([]string, error) {
	evts, err := w.portalEvents(t, room)
	return tokensIn(evts, w.owner.ID, k), err
}

// portalEvents reads room's whole timeline, in the order the homeserver
// took the events, from a fresh /sync of that room alone. Not from
// /messages: Dendrite 0.13.8's /messages sometimes leaves out a room's
// first message (sent while the owner's join was in flight) though the
// room holds it and /event and /sync return it.
func (w *e2eWorld) portalEvents(t *testing.T, room id.RoomID) ([]*event.Event, error) {
	filter := fmt.Sprintf(`{"room":{"rooms":[%q],"timeline":{"limit":5000},"state":{"lazy_load_members":true}},"presence":{"not_types":["*"]},"account_data":{"not_types":["*"]}}`, room)
	resp, err := w.owner.Client.FullSyncRequest(t.Context(), mautrix.ReqSync{FilterID: filter})
	if err != nil {
		return nil, err
	}
	jr, ok := resp.Rooms.Join[room]
	if !ok {
		return nil, fmt.Errorf("the owner's /sync has no room %s", room)
	}
	if jr.Timeline.Limited {
		return nil, fmt.Errorf("the owner's /sync of %s holds only its last %d events", room, len(jr.Timeline.Events))
	}
	return jr.Timeline.Events, nil
}

// tokensIn is chat k's tokens in evts that others sent, in evts' order.
func tokensIn(evts []*event.Event, owner id.UserID, k int) []string {
	var out []string
	for _, evt := range evts {
		if evt.Type != event.EventMessage || evt.Sender == owner {
			continue
		}
		body, _ := evt.Content.Raw["body"].(string)
		if m := killToken.FindStringSubmatch(body); m != nil && m[1] == strconv.Itoa(k) {
			out = append(out, m[0])
		}
	}
	return out
}

// messagesTokens is chat k's tokens as /messages pages room back, oldest
// first: to report where Dendrite's two views differ.
func (w *e2eWorld) messagesTokens(t *testing.T, room id.RoomID, k int) ([]string, error) {
	var evts []*event.Event
	from := ""
	for {
		resp, err := w.owner.Client.Messages(t.Context(), room, from, "", mautrix.DirectionBackward, nil, 500)
		if err != nil {
			return nil, err
		}
		evts = append(evts, resp.Chunk...)
		if len(resp.Chunk) == 0 || resp.End == "" || resp.End == from {
			break
		}
		from = resp.End
	}
	slices.Reverse(evts)
	return tokensIn(evts, w.owner.ID, k), nil
}

// botClient is the appservice's bot, with the registration's token.
func (w *e2eWorld) botClient(t *testing.T) (*mautrix.Client, error) {
	reg, err := appservice.LoadRegistration(filepath.Join(w.dir, "registration.yaml"))
	if err != nil {
		return nil, err
	}
	return mautrix.NewClient(w.hs.URL(), bot, reg.AppToken)
}

// tokensIn is the kill-test tokens the bridge said in channel, in
// arrival order, repeats included.
func (s *ircStream) tokensIn(channel string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range s.lines {
		if strings.HasPrefix(l, ":wabridge!") && strings.Contains(l, " PRIVMSG "+channel+" :") {
			if tok := killToken.FindString(l); tok != "" {
				out = append(out, tok)
			}
		}
	}
	return out
}

// linesWith is the lines of logs that contain word.
func linesWith(logs, word string) string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// copiesOf lists, from the daemon's database, where the message with
// WhatsApp id waID was delivered (connector, chat, native id): for a
// failure's diagnosis.
func (w *e2eWorld) copiesOf(t *testing.T, waID string) []string {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(w.dir, "state", "phonebridge.db")+"?mode=ro")
	if err != nil {
		return []string{err.Error()}
	}
	defer db.Close()
	rows, err := db.QueryContext(t.Context(), `SELECT n.connector, n.chat, n.native_id, n.role FROM native_ids n JOIN messages m ON m.id = n.message_id WHERE m.origin_native = ?`, waID)
	if err != nil {
		return []string{err.Error()}
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var conn, chat, native string
		var role int
		rows.Scan(&conn, &chat, &native, &role)
		out = append(out, fmt.Sprintf("%s/%s/%s(role %d)", conn, chat, native, role))
	}
	return out
}

// whereIs says which room holds evt and whether the owner can read it.
func (w *e2eWorld) whereIs(t *testing.T, room id.RoomID, evt id.EventID) string {
	cli, err := w.botClient(t)
	if err != nil {
		return err.Error()
	}
	e, err := cli.GetEvent(t.Context(), room, evt)
	if err != nil {
		return fmt.Sprintf("the bot cannot read %s: %v", evt, err)
	}
	_, ownerErr := w.owner.Client.GetEvent(t.Context(), room, evt)
	return fmt.Sprintf("%s is in %s from %s (%v); the owner reading it: %v", evt, e.RoomID, e.Sender, e.Content.Raw, ownerErr)
}
