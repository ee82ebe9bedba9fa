"""Fonts, colours and per-series themes."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import dearpygui.dearpygui as dpg

from odin_dashboard.viewmodel.ring import SPHERE_PALETTE

FONT_SIZE = 15
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:/Windows/Fonts/segoeui.ttf",
)
STATUS_COLOURS = {
    "info": (190, 200, 215, 255),
    "busy": (120, 190, 255, 255),
    "warn": (240, 200, 90, 255),
    "error": (255, 110, 100, 255),
}
HEADING = (140, 190, 255, 255)
MUTED = (150, 156, 170, 255)
TRAIN_LOSS_COLOUR = (235, 235, 240, 255)
VAL_LOSS_COLOUR = (255, 160, 60, 255)


def load_fonts() -> Optional[int]:
    """Bind a readable TTF (the built-in 13 px bitmap font is hard to read in screenshots)."""
    for candidate in FONT_CANDIDATES:
        if Path(candidate).is_file():
            with dpg.font_registry():
                font = dpg.add_font(candidate, FONT_SIZE)
            dpg.bind_font(font)
            return font
    return None


def apply_global_theme() -> None:
    with dpg.theme() as theme:
        with dpg.theme_component(dpg.mvAll):
            dpg.add_theme_style(dpg.mvStyleVar_FrameRounding, 3)
            dpg.add_theme_style(dpg.mvStyleVar_ChildRounding, 4)
            dpg.add_theme_style(dpg.mvStyleVar_ItemSpacing, 6, 5)
            dpg.add_theme_style(dpg.mvStyleVar_WindowPadding, 8, 6)
            dpg.add_theme_color(dpg.mvThemeCol_WindowBg, (22, 24, 29, 255))
            dpg.add_theme_color(dpg.mvThemeCol_ChildBg, (28, 30, 36, 255))
        with dpg.theme_component(dpg.mvAll):
            dpg.add_theme_style(dpg.mvPlotStyleVar_PlotPadding, 6, 6, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_style(dpg.mvPlotStyleVar_LegendPadding, 4, 2, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_style(dpg.mvPlotStyleVar_LegendInnerPadding, 3, 1, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_style(dpg.mvPlotStyleVar_LegendSpacing, 2, 0, category=dpg.mvThemeCat_Plots)
        # disabled controls must look disabled (ImGui only dims them slightly)
        for kind in (dpg.mvButton, dpg.mvInputText, dpg.mvInputInt, dpg.mvInputFloat, dpg.mvCombo,
                     dpg.mvCheckbox, dpg.mvSliderInt, dpg.mvRadioButton):
            with dpg.theme_component(kind, enabled_state=False):
                dpg.add_theme_color(dpg.mvThemeCol_Text, (105, 108, 118, 255))
                dpg.add_theme_color(dpg.mvThemeCol_Button, (44, 46, 53, 255))
                dpg.add_theme_color(dpg.mvThemeCol_ButtonHovered, (44, 46, 53, 255))
                dpg.add_theme_color(dpg.mvThemeCol_ButtonActive, (44, 46, 53, 255))
                dpg.add_theme_color(dpg.mvThemeCol_FrameBg, (34, 36, 42, 255))
    dpg.bind_theme(theme)


def line_theme(colour: tuple[int, int, int, int], weight: float = 1.5, markers: bool = False) -> int:
    with dpg.theme() as theme:
        with dpg.theme_component(dpg.mvLineSeries):
            dpg.add_theme_color(dpg.mvPlotCol_Line, colour, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_style(dpg.mvPlotStyleVar_LineWeight, weight, category=dpg.mvThemeCat_Plots)
            if markers:
                dpg.add_theme_style(dpg.mvPlotStyleVar_Marker, dpg.mvPlotMarker_Circle, category=dpg.mvThemeCat_Plots)
                dpg.add_theme_style(dpg.mvPlotStyleVar_MarkerSize, 3.5, category=dpg.mvThemeCat_Plots)
                dpg.add_theme_color(dpg.mvPlotCol_MarkerFill, colour, category=dpg.mvThemeCat_Plots)
                dpg.add_theme_color(dpg.mvPlotCol_MarkerOutline, colour, category=dpg.mvThemeCat_Plots)
    return theme


def sphere_line_themes() -> list[int]:
    return [line_theme(colour, 1.4) for colour in SPHERE_PALETTE]
