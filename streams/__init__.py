"""The stream side: settings, the pure routing core, the Mirror, Faust agents, and operations."""
