"""Front panel: the DAY/NIGHT button and the status LEDs (gpiozero), and the service that runs them."""
from hw.panel.panel import FrontPanel, PanelPins, run_panel

__all__ = ["FrontPanel", "PanelPins", "run_panel"]
