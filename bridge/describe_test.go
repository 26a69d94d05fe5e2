package bridge_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
	"github.com/phonebridge/phonebridge/config"
)

// describingFake describes its chats, with a picture it can reopen.
type describingFake struct {
	*bridgetest.Fake
}

func (describingFake) DescribeChat(_ context.Context, chat string) (bridge.ChatDescription, error) {
	return bridge.ChatDescription{Name: "Family", Topic: "about " + chat, AvatarID: "pic-1", Avatar: &bridge.Media{MIME: "image/jpeg", Ref: "pic"}}, nil
}

func (describingFake) DescribeSender(_ context.Context, chat, sender string) (bridge.SenderDescription, error) {
	return bridge.SenderDescription{Name: sender + " in " + chat, AvatarID: "face-1", Avatar: &bridge.Media{Ref: "pic"}}, nil
}

func TestDescribeAsksTheOriginAndOpensItsPicture(t *testing.T) {
	origin := describingFake{bridgetest.NewFake("phone", all)}
	origin.SetMedia("pic", "jpeg bytes")
	dest, plain := bridgetest.NewFake("mx", all), bridgetest.NewFake("api", all)
	cfg := config.Defaults()
	startBridge(t, map[string]bridge.Connector{"phone": origin, "mx": dest, "api": plain}, &cfg)
	sink := dest.Sink()
	desc, err := sink.DescribeChat(t.Context(), bridge.ChatRef{Connector: "phone", ID: "g1"})
	if err != nil || desc.Topic != "about g1" || desc.AvatarID != "pic-1" || desc.Avatar == nil || desc.Avatar.Open == nil {
		t.Fatalf("DescribeChat = %+v, %v", desc, err)
	}
	rc, err := desc.Avatar.Open(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != "jpeg bytes" {
		t.Errorf("the chat's picture opened as %q", got)
	}
	who, err := sink.DescribeSender(t.Context(), bridge.ChatRef{Connector: "phone", ID: "g1"}, "ann")
	if err != nil || who.Name != "ann in g1" || who.Avatar == nil || who.Avatar.Open == nil {
		t.Errorf("DescribeSender = %+v, %v", who, err)
	}
	for _, origin := range []string{"api", "nowhere"} {
		if _, err := sink.DescribeChat(t.Context(), bridge.ChatRef{Connector: origin, ID: "x"}); !errors.Is(err, bridge.ErrNotDescribed) {
			t.Errorf("describing a chat of %s: %v, want ErrNotDescribed", origin, err)
		}
	}
}
