#!/usr/bin/env bash
# Install the unpacked SentenceKV Desktop bundle for this user: the launcher into ~/.local/share/applications, the
# icon into the hicolor theme, the AppStream metadata, and `skv-desktop` / `skv` links into ~/.local/bin.
# Run it from the unpacked folder: ./install.sh   (./install.sh --uninstall removes what it installed)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${XDG_DATA_HOME:-$HOME/.local/share}"
bin="$HOME/.local/bin"
files=("$data/applications/sentencekv-desktop.desktop" "$data/icons/hicolor/scalable/apps/sentencekv.svg"
       "$data/metainfo/io.github.sentencekv.Desktop.metainfo.xml" "$bin/skv-desktop" "$bin/skv")
if [ "${1:-}" = "--uninstall" ]; then
  rm -f "${files[@]}"
  echo "removed the launcher, icon, metadata and links (the bundle folder itself is left: delete it by hand)"
  exit 0
fi
mkdir -p "$data/applications" "$data/icons/hicolor/scalable/apps" "$data/metainfo" "$bin"
sed "s|^Exec=.*|Exec=\"$here/skv-desktop\"|" "$here/share/sentencekv-desktop.desktop" > "${files[0]}"
cp "$here/share/sentencekv.svg" "${files[1]}"
cp "$here/share/io.github.sentencekv.Desktop.metainfo.xml" "${files[2]}"
ln -sf "$here/skv-desktop" "${files[3]}"
ln -sf "$here/skv-desktop" "${files[4]}"
command -v update-desktop-database >/dev/null && update-desktop-database "$data/applications" 2>/dev/null || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q "$data/icons/hicolor" 2>/dev/null || true
echo "installed: SentenceKV Desktop is in your applications menu; skv-desktop and skv are in $bin"
