package matrix

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"image"
	_ "image/jpeg" // WhatsApp's previews
	_ "image/png"
	"strconv"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
)

// roomSender sends outgoing events into one room as one user. Bot mode
// uses it with the bot's client; appservice mode can with a ghost's.
type roomSender struct {
	cli  *mautrix.Client
	room id.RoomID
	self id.UserID
	// guard, if set, finds what a retried transaction already sent.
	guard *txnGuard
	// senderFormat, if set, puts the sender's name in front of text.
	senderFormat  string
	maxMediaBytes int64
	// maybeSent is the delivery's Outgoing.MaybeSent: an earlier attempt
	// may be in the room already.
	maybeSent bool
	// ts, for history, is the event's own time (ms) that an appservice
	// may give the homeserver in place of now.
	ts int64
	// pill is the Matrix user a mention points at, "" for none.
	pill func(bridge.Mention) id.UserID
	// asSender: the user sending is the sender's own (a ghost), who can
	// vote as them.
	asSender bool
}

// typingTimeout is how long one relayed typing notification lasts: other
// platforms say when typing starts, rarely when it ends.
const typingTimeout = 10 * time.Second

// send performs out and returns the id of the event it created (the
// first, where it took several), with errors in the core's terms.
func (s *roomSender) send(ctx context.Context, out *bridge.Outgoing) (string, error) {
	s.maybeSent = out.MaybeSent
	s.ts = 0
	if out.History && !out.Time.IsZero() {
		s.ts = out.Time.UnixMilli()
	}
	switch out.Kind {
	case bridge.KindMessage:
		return s.message(ctx, out)
	case bridge.KindEdit:
		if out.Target == "" {
			return "", bridge.Permanentf("an edit without the edited message's id")
		}
		if out.Location != nil {
			content, err := locationEditContent(out, s.senderFormat)
			if err != nil {
				return "", bridge.Permanentf("cannot encode the moved place: %v", err)
			}
			return s.put(ctx, out.Key, event.EventMessage, content)
		}
		// What is edited decides the new content; a homeserver that will
		// not say (refused, unknown) gets a text edit.
		orig, err := s.cli.GetEvent(ctx, s.room, id.EventID(out.Target))
		if err != nil && !bridge.IsPermanent(classify(err)) {
			return "", classify(err)
		}
		if err == nil && orig.Type == event.EventMessage && isAttachment(orig.Content.Raw) {
			return s.put(ctx, out.Key, event.EventMessage, captionEditContent(out, s.senderFormat, orig.Content.Raw))
		}
		return s.put(ctx, out.Key, event.EventMessage, editContent(out, s.senderFormat))
	case bridge.KindDelete:
		if out.Target == "" {
			return "", bridge.Permanentf("a delete without the deleted message's id")
		}
		return s.redact(ctx, out.Key, out.Target)
	case bridge.KindReaction:
		if out.Target == "" || out.Emoji == "" {
			return "", bridge.Permanentf("a reaction needs the message's id and an emoji")
		}
		return s.put(ctx, out.Key, event.EventReaction, reactionContent(out.Target, out.Emoji))
	case bridge.KindVote:
		return s.vote(ctx, out)
	case bridge.KindReactionRemove:
		// Matrix removes a reaction by redacting it; without its id (it
		// was never relayed here) there is nothing to take back.
		if out.TargetReaction == "" {
			return "", nil
		}
		return s.redact(ctx, out.Key, out.TargetReaction)
	case bridge.KindTyping:
		_, err := s.cli.UserTyping(ctx, s.room, !out.StoppedTyping, typingTimeout)
		return "", classify(err)
	case bridge.KindRead:
		if out.Target == "" {
			return "", nil
		}
		return "", classify(s.cli.SendReceipt(ctx, s.room, id.EventID(out.Target), event.ReceiptTypeRead, nil))
	}
	return "", bridge.Permanentf("events of kind %q cannot be sent to Matrix", out.Kind)
}

// message sends text, a place, or each attachment with the text as the
// first one's caption, each as its own event under its own transaction
// id.
func (s *roomSender) message(ctx context.Context, out *bridge.Outgoing) (string, error) {
	if out.Poll != nil {
		return s.poll(ctx, out)
	}
	if out.Location != nil {
		return s.location(ctx, out)
	}
	if len(out.Media) == 0 {
		if out.Text == "" && out.HTML == "" {
			return "", bridge.Permanentf("nothing to send: the message has neither text nor media")
		}
		content := textContent(out, s.senderFormat)
		withPills(content, out.Mentions, s.pill)
		fitContent(content)
		withReply(content, out.ReplyTo)
		return s.put(ctx, out.Key, event.EventMessage, content)
	}
	return s.attachments(ctx, out, 0)
}

// location sends out's place as an m.location with its text as the
// caption, then any attachments (no platform sends both today), each
// with its own.
func (s *roomSender) location(ctx context.Context, out *bridge.Outgoing) (string, error) {
	if !out.Location.Valid() {
		return "", bridge.Permanentf("location %v,%v is not on Earth", out.Location.Latitude, out.Location.Longitude)
	}
	native, err := s.put(ctx, out.Key, event.EventMessage, locationContent(out, s.senderFormat))
	if err != nil || len(out.Media) == 0 {
		return native, err
	}
	rest := *out
	rest.Text, rest.HTML, rest.ReplyTo, rest.Location = "", "", "", nil
	if _, err := s.attachments(ctx, &rest, 1); err != nil {
		return "", err
	}
	return native, nil
}

// attachments uploads and sends each of out's attachments, the first
// with out's text as its caption unless skip says other events went
// first, under keys numbered from skip; it returns the first one's id.
func (s *roomSender) attachments(ctx context.Context, out *bridge.Outgoing, skip int) (string, error) {
	var first string
	for i, m := range out.Media {
		uri, size, err := uploadMedia(ctx, s.cli, m, s.maxMediaBytes)
		if err != nil {
			return "", err
		}
		capOut := *out
		capOut.Emote, capOut.Notice = false, false
		if i > 0 || skip > 0 {
			capOut.Text, capOut.HTML = m.Caption, ""
		}
		if m.Kind == bridge.MediaSticker && capOut.Text == "" && capOut.HTML == "" {
			// A sticker's body describes it (after the sender's name, where
			// shown): clients show it in place of the image.
			capOut.Text = cmp.Or(m.Name, mediaName(m))
		}
		content := mediaContent(m, uri, size, textContent(&capOut, s.senderFormat))
		s.withThumbnail(ctx, content, m.Thumbnail)
		fitContent(content)
		if i == 0 {
			withReply(content, out.ReplyTo)
		}
		native, err := s.put(ctx, mediaKey(out.Key, i+skip), mediaEventType(m), &event.Content{Parsed: content, Raw: mediaExtras(m)})
		if err != nil {
			return "", err
		}
		if i == 0 {
			first = native
		}
	}
	return first, nil
}

// withThumbnail uploads an attachment's preview and names it in content,
// for clients to show while the file loads. A preview that cannot be
// uploaded or read is left out: the attachment goes without it.
func (s *roomSender) withThumbnail(ctx context.Context, content *event.MessageEventContent, thumb []byte) {
	if len(thumb) == 0 || content.Info == nil {
		return
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(thumb))
	if err != nil {
		return
	}
	mime := "image/" + format
	up, err := s.cli.UploadBytesWithName(ctx, thumb, mime, "thumbnail."+format)
	if err != nil {
		return
	}
	content.Info.ThumbnailURL = up.ContentURI.CUString()
	content.Info.ThumbnailInfo = &event.FileInfo{MimeType: mime, Size: len(thumb), Width: cfg.Width, Height: cfg.Height}
}

// mediaKey is the transaction id of attachment i of a delivery.
func mediaKey(key string, i int) string {
	if i == 0 {
		return key
	}
	return key + ".m" + strconv.Itoa(i)
}

// put sends one event under transaction id txn.
func (s *roomSender) put(ctx context.Context, txn string, typ event.Type, content any) (string, error) {
	if found := s.guard.lookup(ctx, s, txn); found != "" {
		return found, nil
	}
	resp, err := s.cli.SendMessageEvent(ctx, s.room, typ, withKey(content, txn), mautrix.ReqSendEvent{TransactionID: txn, Timestamp: s.ts})
	if err != nil {
		s.guard.note(txn, err)
		return "", classify(err)
	}
	s.guard.forget(txn)
	return string(resp.EventID), nil
}

// redact redacts target under transaction id txn.
func (s *roomSender) redact(ctx context.Context, txn, target string) (string, error) {
	if found := s.guard.lookup(ctx, s, txn); found != "" {
		return found, nil
	}
	req := mautrix.ReqRedact{TxnID: txn}
	if txn != "" {
		req.Extra = map[string]any{keyField: txn}
	}
	resp, err := s.cli.RedactEvent(ctx, s.room, id.EventID(target), req)
	if err != nil {
		s.guard.note(txn, err)
		return "", classify(err)
	}
	s.guard.forget(txn)
	return string(resp.EventID), nil
}

// txnGuard remembers transactions whose request went out but whose answer
// did not come back: the event may be in the room already. Before such a
// transaction is sent again, the room's recent events are searched for
// its key, so a homeserver that forgot the transaction id (Dendrite after
// a restart) does not show the event twice. Deliveries the core flags
// MaybeSent (the bridge itself was killed) are searched for once: Dendrite
// showed one twice in a test that killed the bridge, its txnId
// notwithstanding.
type txnGuard struct {
	mu     sync.Mutex
	unsure map[string]bool
	// checked are rooms where a search for a delivery the core flagged
	// MaybeSent found nothing: deliveries to a room go in order, so none
	// after it was attempted and their searches are skipped.
	checked map[id.RoomID]bool
	// history is how many of the sender's latest events a search for a
	// flagged delivery reads (up to 64 a chat may have gone out
	// unrecorded). recent is how many a search for an unanswered one
	// reads: if it got there it is the newest, since the room's later
	// deliveries wait behind it; a page of 100 would not download within
	// send_timeout over a link that crawls.
	history, recent int
	// settle is how long a search that finds nothing is repeated: a
	// homeserver back from a crash may show a stored event in /messages
	// only after a while (Dendrite replays its internal stream).
	settle time.Duration
}

func newTxnGuard() *txnGuard {
	return &txnGuard{unsure: map[string]bool{}, checked: map[id.RoomID]bool{}, history: 100, recent: 10, settle: 2 * time.Second}
}

// settleStep is the pause between repeated searches.
const settleStep = 200 * time.Millisecond

// maxUnsure bounds the memory of unanswered transactions; beyond it the
// homeserver's own transaction ids are all that protects.
const maxUnsure = 4096

// note records that txn failed in a way that may have reached the room.
func (g *txnGuard) note(txn string, err error) {
	if g == nil || txn == "" || isDefinite(err) {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.unsure) < maxUnsure {
		g.unsure[txn] = true
	}
}

func (g *txnGuard) forget(txn string) {
	if g == nil {
		return
	}
	g.mu.Lock()
	delete(g.unsure, txn)
	g.mu.Unlock()
}

// lookup returns the event an unanswered txn already created, or "" when
// it must be sent (again).
func (g *txnGuard) lookup(ctx context.Context, s *roomSender, txn string) string {
	if g == nil || txn == "" {
		return ""
	}
	g.mu.Lock()
	unsure := g.unsure[txn]
	flagged := s.maybeSent && !g.checked[s.room]
	g.mu.Unlock()
	if !unsure && flagged {
		// Flagged by the core after our own unclean stop: the homeserver
		// ran on, so one search tells.
		found, err := findSent(ctx, s.cli, s.room, s.self, txn, g.history)
		if err == nil && found == "" {
			g.mu.Lock()
			g.checked[s.room] = true
			g.mu.Unlock()
		}
		return found
	}
	if !unsure {
		return ""
	}
	deadline := time.Now().Add(g.settle)
	for {
		found, err := findSent(ctx, s.cli, s.room, s.self, txn, g.recent)
		if err != nil {
			return "" // cannot tell: sending again is the lesser harm
		}
		if found != "" {
			g.forget(txn)
			return found
		}
		if time.Now().Add(settleStep).After(deadline) {
			return "" // not there: send it
		}
		t := time.NewTimer(settleStep)
		select {
		case <-ctx.Done():
			t.Stop()
			return ""
		case <-t.C:
		}
	}
}

// findSent searches the last limit events self sent in room for the one
// carrying key.
func findSent(ctx context.Context, cli *mautrix.Client, room id.RoomID, self id.UserID, key string, limit int) (string, error) {
	filter := &mautrix.FilterPart{Senders: []id.UserID{self}}
	resp, err := cli.Messages(ctx, room, "", "", mautrix.DirectionBackward, filter, limit)
	if err != nil {
		return "", fmt.Errorf("search the room for an earlier attempt: %w", err)
	}
	for _, evt := range resp.Chunk {
		if evt.Sender != self {
			continue
		}
		if k, _ := evt.Content.Raw[keyField].(string); k == key {
			return string(evt.ID), nil
		}
	}
	return "", nil
}
