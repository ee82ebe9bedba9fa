"""The Dear PyGui layer: builds the window and draws what the view-model computes."""
