package api

import (
	"encoding/json"

	"github.com/phonebridge/phonebridge/bridge"
)

var _ bridge.ChatMover = (*Connector)(nil)

// MoveChats implements bridge.ChatMover: a mirrored chat's log moves to
// its new id, merged by seq with what the new id already logged, and the
// logged events say the new id (chat, origin chat, sender), so a client
// replaying them sees one chat. It runs before Start, so the tables may
// not exist yet.
func (c *Connector) MoveChats(tx *bridge.Tx, origin string, moves []bridge.ChatMove) ([]string, error) {
	var n int
	if err := tx.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'api_events'`).Scan(&n); err != nil || n == 0 {
		return nil, err
	}
	to := map[string]string{}
	for _, m := range moves {
		to[m.From] = m.To
	}
	for _, m := range moves {
		type row struct {
			seq     int64
			payload string
		}
		var logged []row
		rows, err := tx.Query(`SELECT seq, payload FROM api_events WHERE connector = ? AND chat = ?`, c.name, m.From)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.seq, &r.payload); err != nil {
				rows.Close()
				return nil, err
			}
			logged = append(logged, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		for _, r := range logged {
			if _, err := tx.Exec(`UPDATE api_events SET chat = ?, payload = ? WHERE seq = ?`, m.To, movePayload(r.payload, origin, to), r.seq); err != nil {
				return nil, err
			}
		}
		// The merged log was trimmed as far as either part was.
		if _, err := tx.Exec(`INSERT INTO api_chats (connector, chat, trimmed_through)
			SELECT connector, ?, trimmed_through FROM api_chats WHERE connector = ? AND chat = ?
			ON CONFLICT (connector, chat) DO UPDATE SET trimmed_through = max(trimmed_through, excluded.trimmed_through)`, m.To, c.name, m.From); err != nil {
			return nil, err
		}
		if _, err := tx.Exec(`DELETE FROM api_chats WHERE connector = ? AND chat = ?`, c.name, m.From); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// movePayload rewrites a logged event's ids field by field, so fields it
// does not know survive; a payload it cannot read stays as it is.
func movePayload(payload, origin string, to map[string]string) string {
	var ev map[string]json.RawMessage
	if json.Unmarshal([]byte(payload), &ev) != nil {
		return payload
	}
	var chat string
	if json.Unmarshal(ev["chat"], &chat) == nil && to[chat] != "" {
		ev["chat"], _ = json.Marshal(to[chat])
	}
	fromOrigin := false
	var o map[string]any
	if ev["origin"] != nil && json.Unmarshal(ev["origin"], &o) == nil {
		fromOrigin = o["connector"] == origin
		if id, _ := o["chat"].(string); fromOrigin && to[id] != "" {
			o["chat"] = to[id]
			ev["origin"], _ = json.Marshal(o)
		}
	}
	var s map[string]any
	if fromOrigin && ev["sender"] != nil && json.Unmarshal(ev["sender"], &s) == nil {
		if id, _ := s["id"].(string); to[id] != "" {
			s["id"] = to[id]
			ev["sender"], _ = json.Marshal(s)
		}
	}
	out, err := json.Marshal(ev)
	if err != nil {
		return payload
	}
	return string(out)
}
