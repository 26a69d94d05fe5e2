package main

import (
	"context"
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

// matrixRoom is a Matrix room on Dendrite in a fault rig's fan-out: the
// bridge relays in/general into it in bot mode, and Ann reads it.
type matrixRoom struct {
	ann  *mautrix.Client
	room id.RoomID
	bot  id.UserID
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
	return &matrixRoom{ann: mr.Ann, room: mr.Room, bot: mr.BotID}
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
	deadline := time.Now().Add(limit)
	for {
		got, err := m.relayed(t.Context())
		if err == nil && len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Matrix room holds %d of %d messages after %v (%v)", len(got), n, limit, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
