package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// ChatDescription is what the origin platform shows of a chat beyond the
// Name its events carry: destinations that show chats as rooms (Matrix
// portals) give them the same topic and picture.
type ChatDescription struct {
	Name   string `json:"name,omitempty"`
	Topic  string `json:"topic,omitempty"`
	Direct bool   `json:"direct,omitempty"` // a one-to-one chat
	// AvatarID names the chat's current picture and changes when the
	// picture does, so a destination uploads a picture once. "" is none.
	AvatarID string `json:"avatar_id,omitempty"`
	// Avatar is the picture; its Open is set by the core. Nil when none.
	Avatar *Media `json:"avatar,omitempty"`
}

// SenderDescription is what the origin platform shows of a person.
type SenderDescription struct {
	Name     string `json:"name,omitempty"`
	AvatarID string `json:"avatar_id,omitempty"`
	Avatar   *Media `json:"avatar,omitempty"`
}

// Describer is implemented by connectors that can say more of their chats
// and people than events carry. Answers should come from a cache the
// platform's own change events keep fresh; destinations that keep them
// ask once per chat or person, and again when the connector reports a
// change with Sink.DescriptionChanged. An avatar's Media is reopened
// through the connector's MediaOpener.
type Describer interface {
	DescribeChat(ctx context.Context, chat string) (ChatDescription, error)
	DescribeSender(ctx context.Context, chat, sender string) (SenderDescription, error)
}

// DescriptionWatcher is implemented by destinations that keep what an
// origin described (a Matrix portal's topic and picture, a ghost's
// picture) and ask again only when it changed. The core calls it for
// every Sink.DescriptionChanged of another connector; it must not block.
type DescriptionWatcher interface {
	DescriptionChanged(origin, id string)
}

// descriptionChanged tells every DescriptionWatcher but origin that what
// origin says of id changed.
func (b *Bridge) descriptionChanged(origin, id string) {
	for name, conn := range b.conns().conns {
		if w, ok := conn.(DescriptionWatcher); ok && name != origin {
			w.DescriptionChanged(origin, id)
		}
	}
}

// ErrNotDescribed is returned (wrapped) by Sink.DescribeChat and
// DescribeSender when the origin connector does not describe its chats.
var ErrNotDescribed = errors.New("the origin connector does not describe its chats")

// describer returns origin's connector as a Describer.
func (b *Bridge) describer(origin string) (Describer, MediaOpener, error) {
	conn, ok := b.connector(origin)
	if !ok {
		return nil, nil, fmt.Errorf("%w: no connector %q", ErrNotDescribed, origin)
	}
	d, ok := conn.(Describer)
	if !ok {
		return nil, nil, fmt.Errorf("%w: connector %q", ErrNotDescribed, origin)
	}
	opener, _ := conn.(MediaOpener)
	return d, opener, nil
}

func (b *Bridge) describeChat(ctx context.Context, origin ChatRef) (ChatDescription, error) {
	d, opener, err := b.describer(origin.Connector)
	if err != nil {
		return ChatDescription{}, err
	}
	desc, err := d.DescribeChat(ctx, origin.ID)
	if err != nil {
		return ChatDescription{}, err
	}
	desc.Avatar = openable(desc.Avatar, origin.Connector, opener)
	return desc, nil
}

func (b *Bridge) describeSender(ctx context.Context, origin ChatRef, sender string) (SenderDescription, error) {
	d, opener, err := b.describer(origin.Connector)
	if err != nil {
		return SenderDescription{}, err
	}
	desc, err := d.DescribeSender(ctx, origin.ID, sender)
	if err != nil {
		return SenderDescription{}, err
	}
	desc.Avatar = openable(desc.Avatar, origin.Connector, opener)
	return desc, nil
}

// openable is a copy of m whose Open reopens it through its origin.
func openable(m *Media, origin string, opener MediaOpener) *Media {
	if m == nil {
		return nil
	}
	orig, out := *m, *m
	out.Open = func(ctx context.Context) (io.ReadCloser, error) {
		if opener == nil {
			return nil, Permanentf("connector %q cannot reopen its media", origin)
		}
		return opener.OpenMedia(ctx, orig)
	}
	return &out
}
