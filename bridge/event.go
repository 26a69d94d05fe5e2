// Package bridge is phonebridge's core: the neutral event model, the
// connector interface and registry, the router, the durable store and the
// delivery workers. It knows no platform; connectors know exactly one.
package bridge

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// Kind is what an event does.
type Kind string

// The kinds of event the core relays. Message, edit, delete, reaction,
// reaction removal and vote are durable: they are committed before they are
// acknowledged and delivered through the outbox. Typing and read are
// ephemeral: delivered best effort, never stored.
const (
	KindMessage        Kind = "message"
	KindEdit           Kind = "edit"
	KindDelete         Kind = "delete"
	KindReaction       Kind = "reaction"
	KindReactionRemove Kind = "reaction_remove"
	KindVote           Kind = "vote"
	KindTyping         Kind = "typing"
	KindRead           Kind = "read"
)

// Kinds lists every kind, in the order documented to users.
var Kinds = []Kind{KindMessage, KindEdit, KindDelete, KindReaction, KindReactionRemove, KindVote, KindTyping, KindRead}

// Valid reports whether k is one of Kinds.
func (k Kind) Valid() bool {
	for _, known := range Kinds {
		if k == known {
			return true
		}
	}
	return false
}

// Durable reports whether events of this kind go through the store.
func (k Kind) Durable() bool { return k != KindTyping && k != KindRead }

// NeedsTarget reports whether events of this kind act on an earlier message.
func (k Kind) NeedsTarget() bool {
	switch k {
	case KindEdit, KindDelete, KindReaction, KindReactionRemove, KindVote, KindRead:
		return true
	}
	return false
}

// ChatRef names a chat on one connector. ID is the platform's own id
// (a WhatsApp JID, a Matrix room id, an IRC channel); Name is for humans.
type ChatRef struct {
	Connector string `json:"connector"`
	ID        string `json:"id"`
	Name      string `json:"name,omitempty"`
	// Direct marks a one-to-one chat, as its origin platform knows it;
	// destinations that make rooms per chat make a DM of it.
	Direct bool `json:"direct,omitempty"`
}

func (c ChatRef) String() string { return c.Connector + "/" + c.ID }

// Sender is who caused an event. ID is opaque and stable per person on the
// origin platform; IsOwner is true for the bridged account's owner (the
// phone's user on WhatsApp, the owner's Matrix account), whose messages
// are relayed as theirs rather than as a third party's.
type Sender struct {
	ID      string `json:"id,omitempty"`
	Name    string `json:"name,omitempty"`
	IsOwner bool   `json:"is_owner,omitempty"`
}

// Media is one attachment. Its bytes are opened lazily, only when a
// destination that carries media asks for them. Ref is opaque to everyone
// but the origin connector, which reopens it through MediaOpener; it must
// stay valid across restarts because events wait in the outbox.
type Media struct {
	MIME    string `json:"mime,omitempty"`
	Name    string `json:"name,omitempty"`
	Size    int64  `json:"size,omitempty"`
	Caption string `json:"caption,omitempty"`
	Ref     string `json:"ref,omitempty"`

	// Kind says how clients show it, where more than its MIME type says
	// (a voice note, a sticker); empty for a plain file of its type.
	Kind MediaKind `json:"kind,omitempty"`
	// DurationMS is an audio or video's length in milliseconds, where known.
	DurationMS int64 `json:"duration_ms,omitempty"`
	// Width and Height are an image's or video's size in pixels, where known.
	Width  int `json:"width,omitempty"`
	Height int `json:"height,omitempty"`
	// Waveform is a voice note's loudness over its length, each sample
	// 0 to 1024 (as Matrix's voice messages carry it), where known.
	Waveform []int `json:"waveform,omitempty"`
	// Thumbnail is a small preview image (JPEG, as WhatsApp sends one),
	// which clients show while the file itself loads; at most
	// MaxThumbnailBytes.
	Thumbnail []byte `json:"thumbnail,omitempty"`

	// Open is set by the core on outgoing events; nil on inbound ones.
	Open func(ctx context.Context) (io.ReadCloser, error) `json:"-"`
}

// MaxThumbnailBytes bounds a preview carried in the event itself (and so
// in every outbox row for it); WhatsApp's are a few kilobytes.
const MaxThumbnailBytes = 64 << 10

// MediaKind is how an attachment is meant to be shown.
type MediaKind string

// Kinds of media beyond a plain file of its MIME type.
const (
	MediaPlain     MediaKind = ""
	MediaVoice     MediaKind = "voice"      // a voice note: recorded to be played in the chat
	MediaSticker   MediaKind = "sticker"    // an image shown as a sticker, without a frame
	MediaGIF       MediaKind = "gif"        // a short looping video without sound, shown as a GIF
	MediaVideoNote MediaKind = "video_note" // a round video message
)

// Mention is someone a message names. The text names them as Text
// ("@Ann"); destinations that show mentions natively (a Matrix pill, a
// WhatsApp @-mention) turn that into one, others show the text as it is.
type Mention struct {
	// ID is the person's id on their own platform, as Sender.ID carries
	// it there: a Matrix user's id, or, where a ghost or puppet speaks for
	// someone of another platform, that person's id there; empty for the
	// owner.
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
	// Owner marks the bridged account's owner (the phone's user, the
	// Matrix owner): the same person on every platform.
	Owner bool   `json:"owner,omitempty"`
	Text  string `json:"text"`
}

// Poll is a question with options to vote for.
type Poll struct {
	Question string   `json:"question"`
	Options  []string `json:"options"`
	// Choices is how many options one may pick: 1 for one, 0 for any.
	Choices int `json:"choices,omitempty"`
}

// maxPollOptions is the most options a poll may have (WhatsApp's limit,
// and more than any client shows well).
const maxPollOptions = 12

// Check reports what makes the poll unaskable, or nil.
func (p *Poll) Check() error {
	if strings.TrimSpace(p.Question) == "" || len(p.Options) < 2 || len(p.Options) > maxPollOptions || p.Choices < 0 || p.Choices > len(p.Options) {
		return fmt.Errorf("a poll needs a question and 2 to %d options, and choices from 0 (any) to the number of options", maxPollOptions)
	}
	seen := make(map[string]bool, len(p.Options))
	for i, o := range p.Options {
		if strings.TrimSpace(o) == "" {
			return fmt.Errorf("poll option %d is empty", i+1)
		}
		// WhatsApp tells options apart by their words alone.
		if seen[o] {
			return fmt.Errorf("poll option %d repeats an earlier one", i+1)
		}
		seen[o] = true
	}
	return nil
}

// Vote is a person's answer to a poll (the event's Target): the options
// they pick now, which replace any earlier vote of theirs on it.
type Vote struct {
	// Choices are indexes into the poll's options, from 0; none withdraws
	// the vote.
	Choices []int `json:"choices"`

	// Set by the core on outgoing votes, from the poll as it was asked
	// (empty where the poll is unknown to it): the question and options,
	// and the votes per option with this one counted.
	Question string   `json:"question,omitempty"`
	Options  []string `json:"options,omitempty"`
	Tally    []int    `json:"tally,omitempty"`
}

// Check reports what makes the vote unreadable, or nil.
func (v *Vote) Check() error {
	seen := make(map[int]bool, len(v.Choices))
	for _, c := range v.Choices {
		if c < 0 || c >= maxPollOptions || seen[c] {
			return fmt.Errorf("vote choices must be distinct option indexes from 0 to %d", maxPollOptions-1)
		}
		seen[c] = true
	}
	return nil
}

// Location is a place on the map.
type Location struct {
	Latitude  float64 `json:"latitude"`
	Longitude float64 `json:"longitude"`
	Name      string  `json:"name,omitempty"`
	Address   string  `json:"address,omitempty"`
	// Live marks a live location, which its sender updates as they move.
	Live bool `json:"live,omitempty"`
}

// Valid reports whether the coordinates are on Earth.
func (l *Location) Valid() bool {
	return l.Latitude >= -90 && l.Latitude <= 90 && l.Longitude >= -180 && l.Longitude <= 180
}

// Event is the one neutral event every connector produces and consumes.
//
// On an inbound event every id is the origin platform's own. On an outgoing
// event (the argument of Connector.Send) Chat is the destination, and
// ReplyTo, Target and TargetReaction have been rewritten to the
// destination's native ids; a connector never sees another platform's
// message ids.
type Event struct {
	Kind Kind    `json:"kind"`
	Chat ChatRef `json:"chat"`
	// ID is the event's native id on its origin. It makes inbound events
	// idempotent: an event seen twice with the same ID is relayed once.
	// Empty means the platform has none (plain IRC); the core assigns one.
	ID     string    `json:"id,omitempty"`
	Sender Sender    `json:"sender"`
	Time   time.Time `json:"time"`

	// Text is the plain text; HTML the formatted variant where the origin
	// has formatting (a small HTML subset: b, i, s, u, code, pre, a,
	// blockquote, br, p, ul, ol, li).
	Text string `json:"text,omitempty"`
	HTML string `json:"html,omitempty"`
	// StoppedTyping marks a typing event that says the sender stopped
	// (WhatsApp's "paused", a Matrix user leaving the typing list);
	// without it a typing event says they type.
	StoppedTyping bool `json:"stopped_typing,omitempty"`
	// Emote is a /me action; Notice an automated message (bot output).
	Emote  bool `json:"emote,omitempty"`
	Notice bool `json:"notice,omitempty"`
	// History marks a message from the origin's past (WhatsApp's history
	// sync), sent at Time: only destinations that show history
	// (Capabilities.History) get it.
	History bool    `json:"history,omitempty"`
	Media   []Media `json:"media,omitempty"`
	// Location is a place shared as the message; Text, if any, is its
	// caption. On an edit it is where a live location has moved to.
	Location *Location `json:"location,omitempty"`
	// Mentions are the people the text names, each where Text has them.
	Mentions []Mention `json:"mentions,omitempty"`
	// Poll is a poll asked as the message.
	Poll *Poll `json:"poll,omitempty"`
	// Vote is, for a vote, what the sender picked in the poll Target.
	Vote *Vote `json:"vote,omitempty"`
	// ExpiresInSec is, for a message of a disappearing chat, how long
	// after Time it disappears. The core forgets its text then (kept for
	// quotes); destinations that make messages disappear do.
	ExpiresInSec int64 `json:"expires_in_sec,omitempty"`

	// ReplyTo is the message this one answers.
	ReplyTo string `json:"reply_to,omitempty"`
	// Target is the message an edit, delete, reaction, reaction removal,
	// vote or read receipt acts on.
	Target string `json:"target,omitempty"`
	// TargetReaction is, on an outgoing reaction removal, the destination's
	// native id of the reaction being removed, where one is known (Matrix
	// removes a reaction by redacting it).
	TargetReaction string `json:"target_reaction,omitempty"`
	// Emoji is the reaction for reaction and reaction_remove. A removal may
	// leave it empty (WhatsApp does not say which); the core then removes
	// the sender's latest reaction to the target and fills it in.
	Emoji string `json:"emoji,omitempty"`
	// ReplacesReaction marks a reaction that takes the place of the
	// sender's earlier reaction to the same message (WhatsApp keeps one
	// per person): destinations lose the old one as they get the new.
	ReplacesReaction bool `json:"replaces_reaction,omitempty"`

	// Origin is where an outgoing event came from: the origin connector's
	// name and chat. Empty on inbound events.
	Origin ChatRef `json:"origin,omitempty"`
}

// Check reports what makes an inbound event unacceptable, or nil.
func (e *Event) Check() error {
	if !e.Kind.Valid() {
		return fmt.Errorf("kind %q is not one of message, edit, delete, reaction, reaction_remove, vote, typing, read", e.Kind)
	}
	if e.Chat.ID == "" {
		return fmt.Errorf("chat is empty")
	}
	if e.Kind.NeedsTarget() && e.Target == "" {
		return fmt.Errorf("a %s needs a target (the id of the message it acts on)", e.Kind)
	}
	switch e.Kind {
	case KindMessage:
		if e.Text == "" && len(e.Media) == 0 && e.Location == nil && e.Poll == nil {
			return fmt.Errorf("a message needs text, media, a location or a poll")
		}
		if e.Poll != nil {
			if err := e.Poll.Check(); err != nil {
				return err
			}
		}
		for i, m := range e.Media {
			if len(m.Thumbnail) > MaxThumbnailBytes {
				return fmt.Errorf("media %d's thumbnail is %d bytes; at most %d", i, len(m.Thumbnail), MaxThumbnailBytes)
			}
		}
		for i, m := range e.Mentions {
			if m.Text == "" || (m.ID == "" && !m.Owner) {
				return fmt.Errorf("mention %d needs the words that name the person (text) and who it is (an id, or owner)", i)
			}
		}
		if e.Location != nil && !e.Location.Valid() {
			return fmt.Errorf("location %v,%v is not on Earth (latitude -90 to 90, longitude -180 to 180)", e.Location.Latitude, e.Location.Longitude)
		}
	case KindEdit:
		// A live location's update is an edit with the new place.
		if e.Text == "" && e.Location == nil {
			return fmt.Errorf("an edit needs the new text (or, for a live location, the new place)")
		}
		if e.Location != nil && !e.Location.Valid() {
			return fmt.Errorf("location %v,%v is not on Earth (latitude -90 to 90, longitude -180 to 180)", e.Location.Latitude, e.Location.Longitude)
		}
	case KindReaction:
		if e.Emoji == "" {
			return fmt.Errorf("a reaction needs an emoji")
		}
	case KindVote:
		if e.Vote == nil {
			return fmt.Errorf("a vote needs its choices (none withdraws it)")
		}
		return e.Vote.Check()
	}
	return nil
}
