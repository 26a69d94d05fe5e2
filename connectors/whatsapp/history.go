package whatsapp

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/proto/waHistorySync"
	"go.mau.fi/whatsmeow/proto/waWeb"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
)

// HistoryOptions say what of the history WhatsApp hands a linked device
// is relayed, to destinations that show history (Matrix portals, the API).
type HistoryOptions struct {
	// Backfill is none, recent (what WhatsApp sends a new device at
	// once, and what `phonebridge backfill` asks for) or all (the full
	// history the phone sends later too).
	Backfill string `yaml:"backfill"`
	// PerChat caps the messages kept per chat, the newest.
	PerChat int `yaml:"per_chat"`
	// MaxAge leaves out messages older than this; 0 keeps any age.
	MaxAge time.Duration `yaml:"max_age"`
}

const (
	BackfillNone   = "none"
	BackfillRecent = "recent"
	BackfillAll    = "all"

	DefaultHistoryPerChat = 50
)

func (h *HistoryOptions) validate(c *config.Checker) {
	c.OneOf("backfill", h.Backfill, BackfillNone, BackfillRecent, BackfillAll)
	if h.PerChat < 1 {
		c.Errorf("per_chat", "must be at least 1 (got %d); set backfill: none for no history", h.PerChat)
	}
	if h.MaxAge < 0 {
		c.Errorf("max_age", "must not be negative (got %s); 0 keeps any age", h.MaxAge)
	}
}

// wants says whether a history sync of typ is backfilled; the other
// types (push names, status, settings) carry no conversations.
func (h *HistoryOptions) wants(typ waHistorySync.HistorySync_HistorySyncType) bool {
	switch typ {
	case waHistorySync.HistorySync_INITIAL_BOOTSTRAP, waHistorySync.HistorySync_RECENT, waHistorySync.HistorySync_ON_DEMAND:
		return h.Backfill != BackfillNone
	case waHistorySync.HistorySync_FULL:
		return h.Backfill == BackfillAll
	}
	return false
}

// historyNotification is the history sync a message from the account's
// own phone announces, if it is one.
func historyNotification(e *events.Message) *waE2E.HistorySyncNotification {
	if !e.Info.IsFromMe {
		return nil
	}
	return e.Message.GetProtocolMessage().GetHistorySyncNotification()
}

// onHistory downloads the history sync notif names and stores the
// messages to backfill, before WhatsApp is told the notification was
// received: a crash before the commit gets it again, and the backfill
// resumes from the table. whatsmeow stores what the sync says of names
// and LIDs during the download, whatever the backfill setting.
func (c *Connector) onHistory(ctx context.Context, notif *waE2E.HistorySyncNotification) bool {
	cli, _ := c.current()
	if cli == nil {
		return false
	}
	hs, err := cli.DownloadHistorySync(ctx, notif, true)
	if err != nil {
		c.log.Warn("could not download a WhatsApp history sync; WhatsApp sends it again at the next connection", "link", c.name, "err", err)
		return false
	}
	h := c.opts.History
	if !h.wants(hs.GetSyncType()) || len(hs.GetConversations()) == 0 {
		return true
	}
	now := time.Now()
	stored := 0
	var chats []string
	// Each chat under the id its live messages get (the download stored
	// the sync's LID-number pairs first); found before the write, which
	// may record a person met by LID.
	ids := make([]types.JID, len(hs.GetConversations()))
	for i, conv := range hs.GetConversations() {
		if chat, err := types.ParseJID(conv.GetID()); err == nil {
			ids[i] = c.canonicalJID(ctx, chat)
		}
	}
	err = c.store.Write(ctx, func(tx *bridge.Tx) error {
		stored, chats = 0, nil
		for i, conv := range hs.GetConversations() {
			chat := ids[i]
			if chat.IsEmpty() || (chat == types.StatusBroadcastJID && !c.opts.StatusBroadcasts) {
				continue
			}
			var have int
			if err := tx.QueryRow(`SELECT COUNT(*) FROM whatsapp_history WHERE link = ? AND chat = ?`, c.name, chat.String()).Scan(&have); err != nil {
				return err
			}
			// What the owner asked for (backfill on demand) is kept whole.
			limit, maxAge := h.PerChat, h.MaxAge
			if hs.GetSyncType() == waHistorySync.HistorySync_ON_DEMAND {
				limit, maxAge = have+len(conv.GetMessages()), 0
			}
			// WhatsApp lists a conversation's messages newest first.
			for _, m := range conv.GetMessages() {
				if have >= limit {
					break
				}
				wmi := m.GetMessage()
				at := time.Unix(int64(wmi.GetMessageTimestamp()), 0)
				if wmi.GetKey().GetID() == "" || (maxAge > 0 && now.Sub(at) > maxAge) {
					continue
				}
				raw, err := proto.Marshal(wmi)
				if err != nil {
					return err
				}
				r, err := tx.Exec(`INSERT INTO whatsapp_history (link, chat, id, at, msg) VALUES (?, ?, ?, ?, ?)
					ON CONFLICT (link, chat, id) DO NOTHING`, c.name, chat.String(), wmi.GetKey().GetID(), at.Unix(), raw)
				if err != nil {
					return err
				}
				if n, _ := r.RowsAffected(); n > 0 {
					have++
					stored++
					if len(chats) == 0 || chats[len(chats)-1] != chat.String() {
						chats = append(chats, chat.String())
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		c.log.Error("a WhatsApp history sync was not stored; WhatsApp sends it again at the next connection", "link", c.name, "err", err)
		return false
	}
	c.history.mu.Lock()
	for _, chat := range chats {
		c.history.pending[chat]++
	}
	c.history.mu.Unlock()
	c.showHistoryProgress(ctx)
	c.log.Info("WhatsApp history received", "link", c.name, "type", hs.GetSyncType().String(), "conversations", len(hs.GetConversations()), "messages_kept", stored)
	c.kickBackfill()
	return true
}

// kickBackfill wakes the backfill worker.
func (c *Connector) kickBackfill() {
	select {
	case c.backfillKick <- struct{}{}:
	default:
	}
}

// historyState is the backfill's place: the chats with history not yet
// relayed, and a turn that the worker and a live message take to relay
// a chat's history, so that it goes before the chat's next live message.
type historyState struct {
	worker sync.WaitGroup
	turn   sync.Mutex
	mu     sync.Mutex
	// pending counts, per chat with history not yet relayed, the
	// stores of it: a store while the chat is being relayed shows as a
	// new count, so what it stored is not left behind.
	pending map[string]int
}

// backfill relays stored history, oldest first per chat, while the link
// runs; it sleeps until kicked (history stored, a connection made).
func (c *Connector) backfill(ctx context.Context) {
	if err := c.loadPendingHistory(ctx); err != nil {
		c.log.Warn("cannot read the history left to relay; it is relayed at the next start", "link", c.name, "err", err)
		return
	}
	c.showHistoryProgress(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.backfillKick:
		}
		for ctx.Err() == nil {
			chat := c.nextHistoryChat()
			if chat == "" {
				break
			}
			err := c.relayChatHistory(ctx, chat)
			c.showHistoryProgress(ctx)
			if err != nil {
				if ctx.Err() == nil {
					c.log.Warn("history backfill paused; it resumes at the next connection", "link", c.name, "err", err)
				}
				break
			}
		}
	}
}

// loadPendingHistory finds the chats whose history a crash or a stop
// left unrelayed.
func (c *Connector) loadPendingHistory(ctx context.Context) error {
	rows, err := c.store.QueryContext(ctx, `SELECT DISTINCT chat FROM whatsapp_history WHERE link = ? AND done = 0`, c.name)
	if err != nil {
		return err
	}
	defer rows.Close()
	c.history.mu.Lock()
	defer c.history.mu.Unlock()
	for rows.Next() {
		var chat string
		if err := rows.Scan(&chat); err != nil {
			return err
		}
		c.history.pending[chat]++
	}
	return rows.Err()
}

// nextHistoryChat is a chat with history to relay, "" when none.
func (c *Connector) nextHistoryChat() string {
	c.history.mu.Lock()
	defer c.history.mu.Unlock()
	for chat := range c.history.pending {
		return chat
	}
	return ""
}

// historyFirst relays chat's waiting history, if any, before one of its
// live messages.
func (c *Connector) historyFirst(ctx context.Context, chat string) error {
	c.history.mu.Lock()
	waiting := c.history.pending[chat] > 0
	c.history.mu.Unlock()
	if !waiting {
		return nil
	}
	return c.relayChatHistory(ctx, chat)
}

// relayChatHistory relays chat's stored history not yet relayed, oldest
// first, marking it done once the core has it.
func (c *Connector) relayChatHistory(ctx context.Context, chat string) error {
	c.history.turn.Lock()
	defer c.history.turn.Unlock()
	for {
		c.history.mu.Lock()
		stores := c.history.pending[chat]
		c.history.mu.Unlock()
		if stores == 0 {
			return nil
		}
		if err := c.relayStoredHistory(ctx, chat); err != nil {
			return err
		}
		c.history.mu.Lock()
		done := c.history.pending[chat] == stores
		if done {
			delete(c.history.pending, chat)
		}
		c.history.mu.Unlock()
		if done {
			return nil
		}
	}
}

// relayStoredHistory relays what of chat's history is stored and not
// yet relayed.
func (c *Connector) relayStoredHistory(ctx context.Context, chat string) (err error) {
	cli, _ := c.current()
	if cli == nil || !cli.IsLoggedIn() {
		return fmt.Errorf("not logged in to WhatsApp")
	}
	type row struct {
		id  string
		raw []byte
	}
	var rows []row
	err = func() error {
		q, err := c.store.QueryContext(ctx, `SELECT id, msg FROM whatsapp_history WHERE link = ? AND chat = ? AND done = 0 ORDER BY at, id`, c.name, chat)
		if err != nil {
			return err
		}
		defer q.Close()
		for q.Next() {
			var r row
			if err := q.Scan(&r.id, &r.raw); err != nil {
				return err
			}
			rows = append(rows, r)
		}
		return q.Err()
	}()
	if err != nil {
		return fmt.Errorf("read stored history: %w", err)
	}
	// Stored under a JID's String: a failure means a damaged row, which
	// has nothing to relay, ever, and is marked done with the rest.
	jid, perr := types.ParseJID(chat)
	// What the core took is marked done in one write at the end; a crash
	// before it relays those again, which the core relays once.
	var relayed []string
	defer func() {
		if len(relayed) == 0 {
			return
		}
		werr := c.store.Write(context.WithoutCancel(ctx), func(tx *bridge.Tx) error {
			for _, id := range relayed {
				if _, err := tx.Exec(`UPDATE whatsapp_history SET done = 1 WHERE link = ? AND chat = ? AND id = ?`, c.name, chat, id); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			err = werr
		}
	}()
	for _, r := range rows {
		if perr == nil {
			if err := c.relayHistory(ctx, cli, jid, r.raw); err != nil {
				return err
			}
		}
		relayed = append(relayed, r.id)
	}
	return nil
}

// relayHistory relays one stored history message as a live one would be,
// flagged as history at its own time. The core knows its id if it came
// live too (or in an earlier chunk) and relays it once.
func (c *Connector) relayHistory(ctx context.Context, cli waClient, jid types.JID, raw []byte) error {
	var wmi waWeb.WebMessageInfo
	if err := proto.Unmarshal(raw, &wmi); err != nil {
		return nil // damaged: nothing to relay, ever
	}
	e, err := cli.ParseWebMessage(jid, &wmi)
	if err != nil {
		c.log.Debug("a history message could not be read; skipped", "link", c.name, "chat", jid.String(), "err", err)
		return nil
	}
	if !c.relayMessage(ctx, e, true) {
		return fmt.Errorf("the core did not take history message %s in %s", wmi.GetKey().GetID(), jid)
	}
	return nil
}

// backfillPending is how many stored history messages wait to be
// relayed (-1 when it cannot be read).
func (c *Connector) backfillPending(ctx context.Context) int {
	p, err := c.historyProgress(ctx)
	if err != nil {
		return -1
	}
	return p.Waiting
}

func (c *Connector) historyProgress(ctx context.Context) (bridge.HistoryProgress, error) {
	var p bridge.HistoryProgress
	err := c.store.QueryRowContext(ctx, `SELECT COALESCE(SUM(done), 0), COALESCE(SUM(1 - done), 0) FROM whatsapp_history WHERE link = ?`, c.name).Scan(&p.Relayed, &p.Waiting)
	return p, err
}

// showHistoryProgress puts the backfill's progress in the link's status.
func (c *Connector) showHistoryProgress(ctx context.Context) {
	p, err := c.historyProgress(ctx)
	if err != nil || p.Relayed+p.Waiting == 0 {
		return
	}
	c.mu.Lock()
	c.status.History = &p
	c.mu.Unlock()
}

// MaxBackfillCount bounds one on-demand request, as WhatsApp's phones
// answer in chunks of about this many.
const MaxBackfillCount = 500

var _ bridge.Backfiller = (*Connector)(nil)

// Backfill implements bridge.Backfiller: it asks the phone for count
// messages of chat (an id, a number's chat or a name) older than the
// oldest the link has seen. The phone answers with a history sync,
// relayed like any history; this returns once the request is sent.
func (c *Connector) Backfill(ctx context.Context, chat string, count int) error {
	if count < 1 || count > MaxBackfillCount {
		return fmt.Errorf("count must be 1 to %d (got %d)", MaxBackfillCount, count)
	}
	if c.opts.History.Backfill == BackfillNone {
		return fmt.Errorf("WhatsApp link %q relays no history (history.backfill: none); set recent or all to backfill", c.name)
	}
	id, err := c.ResolveChat(ctx, chat)
	if err != nil {
		return err
	}
	jid, err := types.ParseJID(id)
	if err != nil {
		return fmt.Errorf("%q is not a WhatsApp chat id", id)
	}
	jid = c.canonicalJID(ctx, jid)
	cli, dev := c.current()
	if cli == nil || dev == nil || dev.ID == nil || !cli.IsConnected() {
		return fmt.Errorf("WhatsApp link %q is not connected; backfill once `phonebridge links` shows it connected", c.name)
	}
	oldest, err := c.oldestKnown(ctx, jid)
	if err != nil {
		return err
	}
	if oldest == nil {
		return fmt.Errorf("no message of %s has reached link %q yet; WhatsApp needs one to ask for those before it", jid, c.name)
	}
	if _, err := cli.SendMessage(ctx, dev.ID.ToNonAD(), cli.BuildHistorySyncRequest(oldest, count), whatsmeow.SendRequestExtra{Peer: true}); err != nil {
		return fmt.Errorf("ask the phone of link %q for older messages of %s: %w", c.name, jid, err)
	}
	c.log.Info("asked the phone for older messages", "link", c.name, "chat", jid.String(), "count", count, "before", oldest.Timestamp)
	return nil
}

// oldestKnown is the oldest message of chat the link has: from history
// (with its own time), else the first seen live; nil when none.
func (c *Connector) oldestKnown(ctx context.Context, chat types.JID) (*types.MessageInfo, error) {
	info := &types.MessageInfo{MessageSource: types.MessageSource{Chat: chat, IsGroup: chat.Server == types.GroupServer}}
	var raw []byte
	var at int64
	err := c.store.QueryRowContext(ctx, `SELECT id, at, msg FROM whatsapp_history WHERE link = ? AND chat = ? ORDER BY at, id LIMIT 1`, c.name, chat.String()).Scan(&info.ID, &at, &raw)
	if err == nil {
		var wmi waWeb.WebMessageInfo
		if proto.Unmarshal(raw, &wmi) == nil {
			info.IsFromMe = wmi.GetKey().GetFromMe()
		}
		info.Timestamp = time.Unix(at, 0)
		return info, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("read the oldest message of %s: %w", chat, err)
	}
	err = c.store.QueryRowContext(ctx, `SELECT id, from_me, at FROM whatsapp_messages WHERE link = ? AND chat = ? ORDER BY at, id LIMIT 1`, c.name, chat.String()).Scan(&info.ID, &info.IsFromMe, &at)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read the oldest message of %s: %w", chat, err)
	}
	info.Timestamp = time.Unix(at, 0)
	return info, nil
}
