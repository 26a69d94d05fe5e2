package main

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/phonebridge/phonebridge/config"
	"github.com/phonebridge/phonebridge/connectors/matrix"
)

func newMatrixCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "matrix", Short: "Set up Matrix connectors"}
	cmd.AddCommand(&cobra.Command{
		Use:   "registration [NAME]",
		Short: "Write the appservice registration file the homeserver loads",
		Long: `Write the appservice registration file of the matrix connector NAME (the only
one in appservice mode when NAME is left out) to its registration path. It
holds the tokens the homeserver and phonebridge authenticate each other
with, and the ghost users the bridge reserves.

Run it again after changing url, listen, ghost_prefix, bot_localpart or
domain: the file is updated in place and keeps its tokens.`,
		Example: "  phonebridge matrix registration\n  phonebridge matrix registration work-matrix",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := load(g, true)
			if err != nil {
				return err
			}
			name, opts, err := appserviceConnector(cfg, args)
			if err != nil {
				return err
			}
			path := opts.Registration
			if !filepath.IsAbs(path) && cfg.Path != "" {
				// Like every path in the config: from the config's directory.
				path = filepath.Join(filepath.Dir(cfg.Path), path)
			}
			res, err := matrix.WriteRegistration(name, opts, path)
			if err != nil {
				return fmt.Errorf("matrix connector %s: %w", name, err)
			}
			printRegistration(cmd, res)
			return nil
		},
	})
	return cmd
}

// appserviceConnector picks the matrix connector in appservice mode that
// args names, or the only one.
func appserviceConnector(cfg *config.Config, args []string) (string, *matrix.Options, error) {
	var names []string
	for n, c := range cfg.Connectors {
		if o, ok := c.Options.(*matrix.Options); ok && c.Type == "matrix" && o.Mode == matrix.ModeAppservice {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(args) == 1 {
		c, ok := cfg.Connectors[args[0]]
		if !ok {
			return "", nil, fmt.Errorf("no connector %q in %s; matrix connectors in appservice mode: %s", args[0], cfg.Path, listOrNone(names))
		}
		o, ok := c.Options.(*matrix.Options)
		if !ok || c.Type != "matrix" {
			return "", nil, fmt.Errorf("connector %q is of type %s, not matrix; matrix connectors in appservice mode: %s", args[0], c.Type, listOrNone(names))
		}
		if o.Mode != matrix.ModeAppservice {
			return "", nil, fmt.Errorf("matrix connector %q is in %s mode, which needs no registration; set mode: appservice to use one", args[0], o.Mode)
		}
		return args[0], o, nil
	}
	switch len(names) {
	case 0:
		return "", nil, fmt.Errorf("%s has no matrix connector in appservice mode: add one (type: matrix, mode: appservice)", cfg.Path)
	case 1:
		return names[0], cfg.Connectors[names[0]].Options.(*matrix.Options), nil
	}
	return "", nil, fmt.Errorf("%s has %d matrix connectors in appservice mode (%s): name one, as in `phonebridge matrix registration %s`", cfg.Path, len(names), strings.Join(names, ", "), names[0])
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func printRegistration(cmd *cobra.Command, res *matrix.RegistrationResult) {
	out := cmd.OutOrStdout()
	switch {
	case res.Created:
		fmt.Fprintf(out, "Wrote %s (new tokens; the file is private, mode 0600).\n", res.Path)
	case len(res.Changes) > 0:
		fmt.Fprintf(out, "Updated %s, keeping its tokens:\n", res.Path)
		for _, c := range res.Changes {
			fmt.Fprintf(out, "  %s\n", c)
		}
	default:
		fmt.Fprintf(out, "%s is up to date; nothing to do.\n", res.Path)
		return
	}
	fmt.Fprintf(out, `Next, on the homeserver (it must be able to read the file; keep it private):
  Synapse:  list it under app_service_config_files in homeserver.yaml
  Dendrite: list it under app_service_api.config_files in dendrite.yaml
Then restart the homeserver, and phonebridge.
`)
}
