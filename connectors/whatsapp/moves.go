package whatsapp

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"

	"go.mau.fi/whatsmeow/types"

	"github.com/phonebridge/phonebridge/bridge"
)

// Settling people's ids in what was recorded before (see people): a
// release that kept ids as WhatsApp sent them left some people under
// their LID and some under both forms (two chats, two portals). At start,
// before anything runs, each person seen under a LID is settled once:
//   - seen under their number too: the LID's rows move to the number;
//   - seen only under the LID: the LID stays their id for good, as for a
//     person met by LID alone, so their chat and portal go on as they are;
//   - a LID person whose number has since been seen as a chat of its own
//     (met by number first, then by a LID WhatsApp did not pair yet): the
//     number's rows move to the LID once the pair is known.
//
// whatsapp_links.people_settled says it is done; canonicalJID clears it
// when a LID person's number turns up, and merges the number's chat at
// once through the core (people.go, mergeNumber); should that not happen
// (a crash first), the next start merges.

var _ bridge.ChatMoveSource = (*Connector)(nil)
var _ bridge.ChatMover = (*Connector)(nil)

// ChatMoves implements bridge.ChatMoveSource.
func (c *Connector) ChatMoves(ctx context.Context, seen func() ([]string, error)) ([]bridge.ChatMove, error) {
	c.mu.Lock()
	dev := c.device
	c.mu.Unlock()
	if dev == nil || dev.ID == nil || dev.LIDs == nil {
		return nil, nil
	}
	var settled bool
	err := c.store.QueryRowContext(ctx, `SELECT people_settled FROM whatsapp_links WHERE link = ?`, c.name).Scan(&settled)
	if errors.Is(err, sql.ErrNoRows) || settled {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ids, err := seen()
	if err != nil {
		return nil, err
	}
	own, err := c.recordedIDs(ctx)
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, id := range append(ids, own...) {
		known[id] = true
	}
	c.forgetPeople()
	c.loadPeople(ctx)
	c.people.mu.Lock()
	lidPeople := make(map[types.JID]bool, len(c.people.lids))
	for j := range c.people.lids {
		lidPeople[j] = true
	}
	c.people.mu.Unlock()

	var moves []bridge.ChatMove
	var lone []string
	for _, id := range sortedKeys(known) {
		lid, err := types.ParseJID(id)
		if err != nil || lid.Server != types.HiddenUserServer || lid.User == "" {
			continue
		}
		lid = lid.ToNonAD()
		var pn types.JID
		if !dev.LID.IsEmpty() && lid.User == dev.LID.User {
			pn = ownJID(dev)
		} else if p, err := dev.LIDs.GetPNForLID(ctx, lid); err == nil {
			pn = p.ToNonAD()
		}
		pnSeen := !pn.IsEmpty() && known[pn.String()]
		switch {
		case lidPeople[lid]:
			if pnSeen {
				moves = append(moves, bridge.ChatMove{From: pn.String(), To: lid.String()})
			}
		case pnSeen || (!pn.IsEmpty() && pn == ownJID(dev)):
			moves = append(moves, bridge.ChatMove{From: lid.String(), To: pn.String()})
		default:
			lone = append(lone, lid.String())
		}
	}
	err = c.store.Write(ctx, func(tx *bridge.Tx) error {
		for _, lid := range lone {
			if _, err := tx.Exec(`INSERT INTO whatsapp_lid_people (link, lid) VALUES (?, ?) ON CONFLICT DO NOTHING`, c.name, lid); err != nil {
				return err
			}
		}
		if len(moves) == 0 {
			_, err := tx.Exec(`UPDATE whatsapp_links SET people_settled = 1 WHERE link = ?`, c.name)
			return err
		}
		return nil
	})
	c.forgetPeople()
	if err != nil {
		return nil, fmt.Errorf("record the people known by LID: %w", err)
	}
	c.people.settling.Store(len(moves) > 0)
	if len(lone) > 0 {
		c.log.Info("people recorded by LID before keep it as their id", "link", c.name, "people", len(lone))
	}
	return moves, nil
}

// recordedIDs lists the chat and sender ids in the link's own tables.
func (c *Connector) recordedIDs(ctx context.Context) ([]string, error) {
	var out []string
	for _, q := range []string{
		`SELECT DISTINCT chat FROM whatsapp_messages WHERE link = ?`,
		`SELECT DISTINCT sender FROM whatsapp_messages WHERE link = ?`,
		`SELECT jid FROM whatsapp_chats WHERE link = ?`,
		`SELECT DISTINCT chat FROM whatsapp_history WHERE link = ?`,
		`SELECT DISTINCT chat FROM whatsapp_placeholders WHERE link = ?`,
	} {
		rows, err := c.store.QueryContext(ctx, q, c.name)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, err
			}
			out = append(out, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// MoveChats implements bridge.ChatMover for the link's own tables. Where
// both ids hold a row for the same message, the one under To stays.
func (c *Connector) MoveChats(tx *bridge.Tx, origin string, moves []bridge.ChatMove) ([]string, error) {
	if origin != c.name {
		return nil, nil
	}
	for _, m := range moves {
		for _, q := range []string{
			`UPDATE OR IGNORE whatsapp_messages SET chat = ? WHERE link = ? AND chat = ?`,
			`UPDATE whatsapp_messages SET sender = ? WHERE link = ? AND sender = ?`,
			`UPDATE OR IGNORE whatsapp_chats SET jid = ? WHERE link = ? AND jid = ?`,
			`UPDATE OR IGNORE whatsapp_history SET chat = ? WHERE link = ? AND chat = ?`,
			`UPDATE OR IGNORE whatsapp_placeholders SET chat = ? WHERE link = ? AND chat = ?`,
		} {
			if _, err := tx.Exec(q, m.To, c.name, m.From); err != nil {
				return nil, err
			}
		}
		for _, q := range []string{
			`DELETE FROM whatsapp_messages WHERE link = ? AND chat = ?`,
			`DELETE FROM whatsapp_chats WHERE link = ? AND jid = ?`,
			`DELETE FROM whatsapp_history WHERE link = ? AND chat = ?`,
			`DELETE FROM whatsapp_placeholders WHERE link = ? AND chat = ?`,
		} {
			if _, err := tx.Exec(q, c.name, m.From); err != nil {
				return nil, err
			}
		}
	}
	if !c.people.settling.Load() {
		// A merge while running (mergeNumber) is one person's: another's
		// that could not be made now still waits for the next start.
		return nil, nil
	}
	_, err := tx.Exec(`UPDATE whatsapp_links SET people_settled = 1 WHERE link = ?`, c.name)
	return nil, err
}

var _ bridge.ChatsMovedWatcher = (*Connector)(nil)

// ChatsMoved implements bridge.ChatsMovedWatcher: history waiting under a
// moved chat waits under its new id, where MoveChats put its rows, and
// the chat list (one chat fewer) is read again by routes and mirrors.
func (c *Connector) ChatsMoved(origin string, moves []bridge.ChatMove) {
	if origin != c.name {
		return
	}
	c.history.mu.Lock()
	for _, m := range moves {
		if n := c.history.pending[m.From]; n > 0 {
			c.history.pending[m.To] += n
			delete(c.history.pending, m.From)
		}
	}
	c.history.mu.Unlock()
	c.kickBackfill()
	c.withSink(func(s bridge.Sink) { s.ChatsChanged() })
}

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
