package matrix

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
)

// FuzzTransaction puts arbitrary bodies to the appservice API's
// transaction endpoint, as whoever holds the hs_token (or a homeserver
// with a bug) may. The server must never panic or answer 500 (which the
// homeserver retries forever): a body it cannot read is a 400 M_BAD_JSON,
// one it can goes to the handler with every event typed. The handler
// converts each event as appservice mode does, and what it relays must
// pass the same checks as FuzzConvertEvent's.
func FuzzTransaction(f *testing.F) {
	f.Add([]byte(txnBody))
	for _, s := range eventSeeds {
		f.Add([]byte(`{"events":[` + s + `]}`))
	}
	for _, s := range []string{
		`{"events":[],"ephemeral":[{"type":"m.typing","room_id":"!r:x","content":{"user_ids":["@ann:x","@bot:x"]}}]}`,
		`{"de.sorunome.msc2409.ephemeral":[{"type":"m.receipt","room_id":"!r:x","content":{"$e":{"m.read":{"@ann:x":{"ts":1}}}}},{"type":"m.presence","content":{}}]}`,
		`{"ephemeral":[{"type":"m.receipt","room_id":"!r:x","content":{"$e":{"m.read":{"@ann:x":{"ts":"x"}}}}}]}`,
		`{"events":[null]}`, `{"events":{}}`, `{"events":[{"type":5}]}`, `{"events":[{"content":[]}]}`,
		`{"ephemeral":[null,{"type":"m.typing","room_id":"!r:x","content":{"user_ids":null}}]}`,
		`{}`, `[]`, `null`, ``, `{"events":[`, "\xff",
	} {
		f.Add([]byte(s))
	}

	o := asOptions()
	reg := testRegistration(o)
	store, err := bridge.OpenStore(filepath.Join(f.TempDir(), "pb.db"), "normal")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	b, err := newASBridge(context.Background(), bridge.Env{Name: "mx", Store: store}, o, reg)
	if err != nil {
		f.Fatal(err)
	}
	c := &Connector{self: b.bot, typing: map[id.RoomID]map[id.UserID]bool{}}
	var t *testing.T // the iteration's, for the handler's checks
	srv := b.newServer(func(_ context.Context, _ string, events []*event.Event) error {
		for _, evt := range events {
			switch {
			case evt == nil:
				t.Fatal("a nil event handed on")
			case evt.StateKey != nil:
				if evt.Type.Class != event.StateEventType {
					t.Fatalf("state event of class %v", evt.Type.Class)
				}
				rooms := newRoomCache()
				rooms.learn(evt.RoomID, []*event.Event{evt})
			case evt.Type.Class == event.EphemeralEventType:
				if evt.RoomID == "" {
					t.Fatal("an ephemeral event without a room handed on")
				}
				for _, ev := range c.convertEphemeral(evt) {
					if ev.Kind != bridge.KindTyping && ev.Kind != bridge.KindRead {
						t.Fatalf("ephemeral event became %+v", ev)
					}
				}
			case evt.Type.Class == event.MessageEventType:
				checkConverted(t, evt)
			default:
				t.Fatalf("event of class %v handed on", evt.Type.Class)
			}
		}
		return nil
	})
	f.Fuzz(func(tt *testing.T, body []byte) {
		t = tt
		req := httptest.NewRequest(http.MethodPut, "/_matrix/app/v1/transactions/fuzz", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+reg.ServerToken)
		rec := httptest.NewRecorder()
		srv.srv.Handler.ServeHTTP(rec, req)
		var e struct {
			Errcode string `json:"errcode"`
			Error   string `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
			t.Fatalf("answer %d is not JSON: %q", rec.Code, rec.Body.String())
		}
		switch rec.Code {
		case http.StatusOK:
			if e.Errcode != "" {
				t.Fatalf("200 with errcode %s", e.Errcode)
			}
		case http.StatusBadRequest:
			if e.Errcode != "M_BAD_JSON" || e.Error == "" || strings.ContainsAny(e.Error, "\r\n") {
				t.Fatalf("400 with %+v", e)
			}
		default:
			t.Fatalf("answered %d %+v to %q", rec.Code, e, body)
		}
	})
}
