package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/octohelm/crpe/internal/cosignkey"
)

func newKeygenCmd() *cobra.Command {
	var prefix string
	var force bool
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Make a key pair in cosign's format for signing packages and images",
		Long: `crpe keygen writes PREFIX.key (an ECDSA P-256 private key, encrypted with the
password in COSIGN_PASSWORD, which may be empty) and PREFIX.pub, in cosign's
format: cosign signs and verifies with them, and crpe export --sign-key,
crpe inspect --verify --key and crpe agent --verify-key take them (or keys
made by cosign generate-key-pair).`,
		Example: `  COSIGN_PASSWORD=... crpe keygen --output-key-prefix site
  COSIGN_PASSWORD=... crpe export -f app.yaml --sign-key site.key
  crpe inspect app-1.0.0.kubepkg.tgz --verify --key site.pub`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			keyFile, pubFile := prefix+".key", prefix+".pub"
			if !force {
				for _, f := range []string{keyFile, pubFile} {
					if _, err := os.Stat(f); err == nil {
						return fmt.Errorf("%s exists (--force to overwrite)", f)
					} else if !errors.Is(err, os.ErrNotExist) {
						return err
					}
				}
			}
			priv, pub, err := cosignkey.Generate([]byte(os.Getenv("COSIGN_PASSWORD")))
			if err != nil {
				return err
			}
			if err := os.WriteFile(keyFile, priv, 0o600); err != nil {
				return err
			}
			if err := os.WriteFile(pubFile, pub, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s (private, keep it) and %s (public, for the agents)\n", keyFile, pubFile)
			return nil
		},
	}
	cmd.Flags().StringVar(&prefix, "output-key-prefix", "cosign", "write PREFIX.key and PREFIX.pub")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing files")
	return cmd
}
