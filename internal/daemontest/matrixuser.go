package daemontest

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/internal/testservers"
)

// MatrixUser is a person on a test homeserver whose client syncs in the
// background and records every timeline event of the rooms it is in, their
// ephemeral events (typing, receipts), and every invite, for tests to wait
// on.
type MatrixUser struct {
	Client *mautrix.Client
	ID     id.UserID

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced at each new record
	events    []*event.Event
	ephemeral []*event.Event
	invites   map[id.RoomID]string // room → its name, as the invite shows it
	err       error                // the last sync error, for failures
}

// NewMatrixUser registers localpart on hs with displayName and starts its
// sync; it stops at the test's end.
func NewMatrixUser(t testing.TB, hs *testservers.Dendrite, localpart, displayName string) *MatrixUser {
	t.Helper()
	userID, token := hs.Register(t, localpart, localpart+"-password", false)
	cli, err := mautrix.NewClient(hs.URL(), id.UserID(userID), token)
	if err != nil {
		t.Fatal(err)
	}
	cli.Client = &http.Client{Timeout: 60 * time.Second}
	if err := cli.SetDisplayName(t.Context(), displayName); err != nil {
		t.Fatal(err)
	}
	u := &MatrixUser{Client: cli, ID: id.UserID(userID), changed: make(chan struct{}), invites: map[id.RoomID]string{}}
	resp, err := cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Timeout: 0})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go u.sync(ctx, resp.NextBatch, done)
	return u
}

// sync long-polls until ctx ends, recording what arrives.
func (u *MatrixUser) sync(ctx context.Context, since string, done chan struct{}) {
	defer close(done)
	for ctx.Err() == nil {
		resp, err := u.Client.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 20000, Since: since})
		if err != nil {
			u.mu.Lock()
			u.err = err
			u.mu.Unlock()
			// The homeserver may be restarting: try again shortly.
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		u.mu.Lock()
		for room, inv := range resp.Rooms.Invite {
			name := ""
			for _, evt := range inv.State.Events {
				if evt.Type == event.StateRoomName {
					name, _ = evt.Content.Raw["name"].(string)
				}
			}
			u.invites[room] = name
		}
		for room, jr := range resp.Rooms.Join {
			for _, evt := range jr.Timeline.Events {
				evt.RoomID = room
				if evt.Content.Parsed == nil {
					_ = evt.Content.ParseRaw(evt.Type)
				}
				u.events = append(u.events, evt)
			}
			for _, evt := range jr.Ephemeral.Events {
				evt.RoomID = room
				if evt.Content.Parsed == nil {
					_ = evt.Content.ParseRaw(evt.Type)
				}
				u.ephemeral = append(u.ephemeral, evt)
			}
		}
		close(u.changed)
		u.changed = make(chan struct{})
		u.mu.Unlock()
		since = resp.NextBatch
	}
}

// Events is every timeline event recorded so far, oldest first.
func (u *MatrixUser) Events() []*event.Event {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*event.Event(nil), u.events...)
}

// Await waits up to limit for a recorded event (any so far, or a new one)
// that match takes, and returns the first; it fails the test after limit,
// saying what it waited for.
func (u *MatrixUser) Await(t testing.TB, what string, limit time.Duration, match func(*event.Event) bool) *event.Event {
	t.Helper()
	return u.await(t, what, limit, func() []*event.Event { return u.events }, match)
}

// AwaitEphemeral is Await for the rooms' ephemeral events (m.typing,
// m.receipt), which are not in Events.
func (u *MatrixUser) AwaitEphemeral(t testing.TB, what string, limit time.Duration, match func(*event.Event) bool) *event.Event {
	t.Helper()
	return u.await(t, what, limit, func() []*event.Event { return u.ephemeral }, match)
}

// await waits for the first of recorded (read under u.mu) that match takes.
func (u *MatrixUser) await(t testing.TB, what string, limit time.Duration, recorded func() []*event.Event, match func(*event.Event) bool) *event.Event {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	seen := 0
	for {
		u.mu.Lock()
		evs := recorded()
		for ; seen < len(evs); seen++ {
			if match(evs[seen]) {
				evt := evs[seen]
				u.mu.Unlock()
				return evt
			}
		}
		changed, err := u.changed, u.err
		u.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("%s saw no %s within %v (last sync error: %v)", u.ID, what, limit, err)
			return nil
		}
	}
}

// Invited is how many rooms called name u has been invited to.
func (u *MatrixUser) Invited(name string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, have := range u.invites {
		if have == name {
			n++
		}
	}
	return n
}

// AcceptInvite waits up to limit for an invite to a room called name,
// joins it and returns it.
func (u *MatrixUser) AcceptInvite(t testing.TB, name string, limit time.Duration) id.RoomID {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		u.mu.Lock()
		var room id.RoomID
		var names []string
		for r, n := range u.invites {
			if n == name {
				room = r
			}
			names = append(names, n)
		}
		changed, err := u.changed, u.err
		u.mu.Unlock()
		if room != "" {
			if _, err := u.Client.JoinRoomByID(t.Context(), room); err != nil {
				t.Fatalf("%s cannot join %s (%s): %v", u.ID, room, name, err)
			}
			return room
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("%s got no invite to a room called %q within %v (invited to %q; last sync error: %v)", u.ID, name, limit, strings.Join(names, ", "), err)
			return ""
		}
	}
}
